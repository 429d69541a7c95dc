from collections import Counter

import numpy as np
import pytest
from PIL import Image

from awares.crops import boxes_to_crops, low_res_view
from awares.data.synthetic import (
    BACKGROUNDS,
    CODE_COLORS,
    COLORS,
    PATCH_SIDE,
    PLATE_COLOR,
    SIDES,
    code_box,
    draw_plate,
    generate,
    make_sample,
)


def read_code(image, plate):
    """The code colour whose checkerboard fills the plate's middle patch exactly, or None."""
    pixels = np.asarray(image.convert("RGB")).astype(int)
    code = code_box(plate)
    patch = pixels[code.y0 : code.y1, code.x0 : code.x1]
    parity = (np.add.outer(np.arange(PATCH_SIDE), np.arange(PATCH_SIDE)) % 2 == 0)[..., None]
    for name, ink in CODE_COLORS.items():
        if np.array_equal(patch, np.where(parity, ink, [255 - v for v in ink])):
            return name
    return None


def test_generation_is_deterministic():
    a, b = make_sample(123), make_sample(123)
    assert a.question == b.question and a.answers == b.answers and a.evidence == b.evidence
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert not np.array_equal(np.asarray(make_sample(124).image), np.asarray(a.image))


def test_splits_are_disjoint_and_named():
    train = [s.id for s in generate("train", 3)]
    test = [s.id for s in generate("test", 3)]
    assert train == ["train-000000", "train-000001", "train-000002"] and test[0] == "test-000000"
    assert not np.array_equal(np.asarray(next(generate("train", 1)).image), np.asarray(next(generate("test", 1)).image))
    with pytest.raises(ValueError, match="unknown split"):
        list(generate("dev", 1))


def test_the_plate_holds_the_code_and_is_plain_to_see_at_half_resolution():
    samples = [s for s in generate("test", 80) if s.kind == "detail"]
    assert len(samples) > 15
    for s in samples:
        (plate,) = s.evidence
        assert plate.width == plate.height == 84 and plate.x0 % 28 == 0 and plate.y0 % 28 == 0
        assert read_code(s.image, plate) == s.answers[0]
        low = np.asarray(low_res_view(s.image)).astype(int)
        x, y = plate.x0 // 2, plate.y0 // 2
        assert np.abs(low[y + 2, x + 2] - PLATE_COLOR).max() <= 2  # the plate is where it is at 0.5x
        code = code_box(plate)
        grey = low[code.y0 // 2 + 2 : code.y1 // 2 - 2, x + 21]
        assert np.abs(grey - 127.5).max() <= 1  # and its middle is plain grey


def test_the_half_resolution_view_carries_no_information_about_the_code():
    """Every code on the same plate gives the same 0.5x view, but for an edge ring within 8/255."""
    views = []
    for code in CODE_COLORS:
        image = Image.new("RGB", (224, 224), BACKGROUNDS["white"])
        plate = draw_plate(image, 56, 84, code)
        views.append(np.asarray(low_res_view(image)).astype(int))
    spread = np.ptp(np.stack(views), axis=0).max(axis=-1)
    assert spread.max() <= 8
    o = code_box(plate).x0 // 2, code_box(plate).y0 // 2
    inner = spread[o[1] + 3 : o[1] + PATCH_SIDE // 2 - 3, o[0] + 3 : o[0] + PATCH_SIDE // 2 - 3]
    assert inner.max() <= 1  # inside the patch's edge ring the views differ by rounding only


def test_global_answers_are_visible_at_low_res():
    samples = [s for s in generate("test", 80) if s.kind == "global"]
    types = Counter(s.meta["type"] for s in samples)
    assert min(types.values()) > 10
    for s in samples:
        low = np.asarray(low_res_view(s.image)).astype(int)
        if s.meta["type"] == "background":
            assert np.abs(low[1, 1] - BACKGROUNDS[s.answers[0]]).max() <= 6 or s.evidence[0].x0 == 0
            continue
        for box in s.evidence:  # each shape's centre keeps its colour in the half-resolution view
            centre = low[(box.y0 + box.y1) // 4 + 3, (box.x0 + box.x1) // 4]
            assert np.abs(centre - COLORS[s.answers[0]]).max() <= 2


def test_sizes_vary_in_side_and_aspect_and_stay_on_the_grid():
    sizes = Counter(s.image.size for s in generate("val", 300))
    assert all(w in SIDES and h in SIDES and w * h <= 560 * 560 for w, h in sizes)
    assert len(sizes) > 20 and min(SIDES) == 224 and max(max(s) for s in sizes) == 896
    assert any(w / h >= 3 for w, h in sizes) and any(h / w >= 3 for w, h in sizes)


def test_the_all_sizes_splits_span_the_processors_range_in_three_equal_buckets():
    tokens = [s.image.size[0] * s.image.size[1] // (28 * 28) for s in generate("val-all", 240)]
    buckets = Counter(0 if t <= 400 else 1 if t <= 1024 else 2 for t in tokens)
    assert min(tokens) >= 64 and max(tokens) <= 2048 and min(buckets.values()) > 240 / 3 * 0.7
    sizes = {s.image.size for s in generate("train-all", 240)}
    assert all(w % 112 == 0 and h % 112 == 0 and max(w, h) <= 4 * min(w, h) for w, h in sizes)
    assert any(w == 4 * h for w, h in sizes) and any(w * h > 1024 * 28 * 28 for w, h in sizes)
    for s in generate("train-all", 60, detail_fraction=1.0):  # every size still places each crop's plates
        assert boxes_to_crops(s.evidence, *s.image.size).crop_ids == (s.meta["target"],)
    # the older splits draw exactly what they drew before these were added
    first = next(generate("train", 1))
    assert (first.image.size, first.answers) == ((784, 336), ["red"])


def test_every_crop_is_the_cheapest_cover_of_a_ninth_of_the_plates():
    samples = list(generate("val", 720, detail_fraction=1.0))
    covers = Counter()
    for s in samples:
        ids = boxes_to_crops(s.evidence, *s.image.size).crop_ids
        assert ids == (s.meta["target"],)  # the placement does what it says
        covers[ids[0]] += 1
    assert set(covers) == set("012345678") and min(covers.values()) > 720 / 9 * 0.7
    hw = [s for s in samples if s.evidence[0].x0 < s.image.size[0] // 2 < s.evidence[0].x1]
    assert len(hw) > 150  # many plates straddle a midline


def test_kinds_and_question_types():
    samples = list(generate("val", 300))
    kinds = Counter(s.kind for s in samples)
    assert 0.3 < kinds["detail"] / len(samples) < 0.5
    assert set(Counter(s.meta["type"] for s in samples)) == {"code", "color", "background"}


def test_detail_fraction_is_configurable():
    assert all(s.kind == "global" for s in generate("test", 20, detail_fraction=0.0))
    assert all(s.kind == "detail" for s in generate("test", 20, detail_fraction=1.0))


def test_shapes_keep_clear_of_the_plate():
    for seed in range(200):
        detail, other = make_sample(seed, detail_fraction=1.0), make_sample(seed, detail_fraction=0.0)
        assert np.array_equal(np.asarray(detail.image), np.asarray(other.image))  # the kind is drawn last
        (plate,) = detail.evidence
        if other.meta["type"] == "color":
            assert all(plate.intersection(shape) == 0 for shape in other.evidence)
