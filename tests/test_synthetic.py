from collections import Counter

import numpy as np
import pytest

from awares.crops import boxes_to_crops, low_res_view
from awares.data.synthetic import BACKGROUNDS, COLORS, SIDES, TAG_COLORS, generate, make_sample


def read_tag(image, box):
    """The tag colour whose checkerboard fills the box interior exactly, or None."""
    pixels = np.asarray(image.convert("RGB")).astype(int)
    inner = pixels[box.y0 + 2 : box.y1 - 2, box.x0 + 2 : box.x1 - 2]
    for name, ink in TAG_COLORS.items():
        complement = [255 - v for v in ink]
        expected = np.array([[ink if (i + j) % 2 == 0 else complement for i in range(8)] for j in range(6)])
        if inner.shape == expected.shape and np.array_equal(inner, expected):
            return name
    return None


def tag_tint(image, box):
    """Largest deviation of the tag interior from its mean grey, per pixel and channel."""
    pixels = np.asarray(image.convert("RGB")).astype(float)[box.y0 + 1 : box.y1 - 1, box.x0 + 1 : box.x1 - 1]
    return float(np.abs(pixels - pixels.mean(axis=2, keepdims=True)).max())


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


def test_detail_evidence_box_holds_the_answer_and_is_grey_at_low_res():
    samples = [s for s in generate("test", 80) if s.kind == "detail"]
    assert len(samples) > 15
    for s in samples:
        (box,) = s.evidence
        assert read_tag(s.image, box) == s.answers[0]
        assert tag_tint(s.image, box) > 100  # vivid at full resolution
        low = low_res_view(s.image)
        half = type(box)(box.x0 // 2, box.y0 // 2, -(-box.x1 // 2), -(-box.y1 // 2))
        assert tag_tint(low, half) < 40  # the colours cancel out at half resolution


def test_global_answers_are_visible_at_low_res():
    samples = [s for s in generate("test", 80) if s.kind == "global"]
    types = Counter(s.meta["type"] for s in samples)
    assert min(types.values()) > 10
    for s in samples:
        low = np.asarray(low_res_view(s.image)).astype(int)
        if s.meta["type"] == "background":
            assert np.abs(low[1, 1] - BACKGROUNDS[s.answers[0]]).max() <= 6
            continue
        for box in s.evidence:  # each shape's centre keeps its colour in the half-resolution view
            centre = low[(box.y0 + box.y1) // 4 + 3, (box.x0 + box.x1) // 4]
            assert np.abs(centre - COLORS[s.answers[0]]).max() <= 2


def test_sizes_kinds_and_crops_cover_the_whole_crop_set():
    samples = list(generate("val", 500))
    assert {s.image.size[0] for s in samples} <= set(SIDES) and all(s.image.size[1] % 56 == 0 for s in samples)
    assert len({s.image.size for s in samples}) > 10  # many sizes and aspect ratios
    kinds = Counter(s.kind for s in samples)
    assert 0.3 < kinds["detail"] / len(samples) < 0.5
    crops = Counter(
        c for s in samples if s.kind == "detail" for c in boxes_to_crops(s.evidence, *s.image.size).crop_ids
    )
    assert set(crops) == set("012345678")
    types = Counter(s.meta["type"] for s in samples)
    assert set(types) == {"code", "color", "background"}


def test_detail_fraction_is_configurable():
    assert all(s.kind == "global" for s in generate("test", 20, detail_fraction=0.0))
    assert all(s.kind == "detail" for s in generate("test", 20, detail_fraction=1.0))
