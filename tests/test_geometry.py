import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from awares.crops import ALL, CROP_IDS, CROP_NAMES, Box, crop_box, extract_crops, low_res_size, low_res_view


def test_crop_set_matches_the_released_checkpoint_map():
    assert CROP_NAMES == {
        "0": "top-left",
        "1": "top-right",
        "2": "bottom-left",
        "3": "bottom-right",
        "4": "center",
        "5": "top",
        "6": "bottom",
        "7": "left",
        "8": "right",
    }
    assert CROP_IDS[-1] == ALL


@pytest.mark.parametrize(
    "crop_id, expected",
    [
        ("0", (0, 0, 500, 300)),
        ("1", (500, 0, 1000, 600 // 2)),
        ("2", (0, 300, 500, 600)),
        ("3", (500, 300, 1000, 600)),
        ("4", (250, 150, 750, 450)),
        ("5", (0, 0, 1000, 300)),
        ("6", (0, 300, 1000, 600)),
        ("7", (0, 0, 500, 600)),
        ("8", (500, 0, 1000, 600)),
        ("all", (0, 0, 1000, 600)),
    ],
)
def test_crop_boxes_on_an_even_image(crop_id, expected):
    assert crop_box(crop_id, 1000, 600).as_tuple() == expected


def reference_box(name: str, width: int, height: int) -> tuple[int, int, int, int]:
    """``get_crop_box`` of the reference evaluation code (NimrodShabtay/AwaRes,
    lmms_eval/qwen2_5_vl_awares.py), restated: the whole image when a side is under 100 px."""
    if width < 100 or height < 100 or name == "all":
        return (0, 0, width, height)
    cw, ch = max(100, width // 2), max(100, height // 2)
    return {
        "top-left": (0, 0, cw, ch),
        "top-right": (width - cw, 0, width, ch),
        "bottom-left": (0, height - ch, cw, height),
        "bottom-right": (width - cw, height - ch, width, height),
        "center": ((width - cw) // 2, (height - ch) // 2, (width + cw) // 2, (height + ch) // 2),
        "top": (0, 0, width, ch),
        "bottom": (0, height - ch, width, height),
        "left": (0, 0, cw, height),
        "right": (width - cw, 0, width, height),
    }[name]


def test_crop_boxes_and_low_res_sizes_match_the_reference_code_on_a_grid_of_sizes():
    sides = sorted({*range(1, 130), *range(130, 5001, 97), 199, 200, 201, 4999, 5000})
    names = {**CROP_NAMES, ALL: ALL}
    for w in sides:
        for h in sides[::7]:
            for cid, name in names.items():
                assert crop_box(cid, w, h).as_tuple() == reference_box(name, w, h), (cid, w, h)
            if min(w, h) >= 56 and w * h <= 2048 * 28 * 28:  # within the processor's cap
                assert low_res_size(w, h, max_pixels=2048 * 28 * 28) == (int(w * 0.5), int(h * 0.5))


def test_odd_sizes_anchor_the_far_crops_at_the_far_edge():
    w, h = 1001, 667
    assert crop_box("0", w, h).as_tuple() == (0, 0, 500, 333)
    assert crop_box("3", w, h).as_tuple() == (501, 334, 1001, 667)
    assert crop_box("4", w, h).as_tuple() == (250, 167, 750, 500)


def test_short_sides_are_cut_at_the_minimum_from_their_edge():
    # 150 px tall: the quadrants are 75 px tall and grow to 100 px, from the top or from the bottom.
    assert crop_box("0", 800, 150, min_side=100).as_tuple() == (0, 0, 400, 100)
    assert crop_box("6", 800, 150, min_side=100).as_tuple() == (0, 50, 800, 150)
    assert crop_box("4", 800, 150, min_side=100).as_tuple() == (200, 25, 600, 125)


def test_image_smaller_than_the_minimum_gets_the_whole_image():
    for cid in CROP_IDS:
        assert crop_box(cid, 60, 40, min_side=100).as_tuple() == (0, 0, 60, 40)
        assert crop_box(cid, 800, 99, min_side=100).as_tuple() == (0, 0, 800, 99)


def test_unknown_crop_id_and_empty_image_are_refused():
    with pytest.raises(KeyError, match="unknown crop id"):
        crop_box("9", 100, 100)
    with pytest.raises(ValueError):
        crop_box("0", 0, 100)


@given(st.integers(1, 5000), st.integers(1, 5000), st.sampled_from(CROP_IDS), st.integers(0, 300))
def test_every_crop_is_a_non_empty_box_inside_the_image(w, h, cid, min_side):
    box = crop_box(cid, w, h, min_side=min_side)
    assert 0 <= box.x0 < box.x1 <= w and 0 <= box.y0 < box.y1 <= h
    assert box.width >= min(min_side, w) and box.height >= min(min_side, h)


def test_extract_crops_keeps_native_resolution_and_order():
    image = Image.new("RGB", (640, 480))
    crops = extract_crops(image, ["5", "0", "all"])
    assert [c.size for c in crops] == [(640, 240), (320, 240), (640, 480)]


def test_low_res_view_halves_each_side_but_never_below_28px():
    assert low_res_size(1344, 896) == (672, 448)
    assert low_res_size(1001, 667) == (500, 333)  # int(side * 0.5), as the reference code
    assert low_res_size(40, 1000) == (28, 500)
    assert low_res_size(20, 20) == (20, 20)  # never larger than the original
    assert low_res_size(800, 600, scale=0.25) == (200, 150)
    with pytest.raises(ValueError):
        low_res_size(100, 100, scale=0)
    view = low_res_view(Image.new("RGB", (300, 200)))
    assert view.size == (150, 100)


def test_box_helpers():
    a, b = Box(0, 0, 10, 10), Box(5, 5, 15, 15)
    assert a.intersection(b) == 25
    assert a.iou(b) == pytest.approx(25 / 175)
    assert Box(-5, -5, 50, 50).clip(20, 30).as_tuple() == (0, 0, 20, 30)
    with pytest.raises(ValueError, match="empty box"):
        Box(5, 5, 5, 10)
