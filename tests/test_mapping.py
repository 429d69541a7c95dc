import pytest

from awares.crops import ALL, Box, boxes_to_crops, coverage, crop_box, iou_crops

W, H = 1000, 800


@pytest.mark.parametrize(
    "box, expected",
    [
        ((50, 50, 120, 90), ("0",)),  # inside the top-left quadrant
        ((900, 700, 980, 780), ("3",)),  # bottom-right corner
        ((450, 50, 550, 90), ("5",)),  # straddles the top quadrants: one half beats two quadrants
        ((460, 380, 540, 420), ("4",)),  # the image centre: only the centre crop (or a half) holds it
        ((50, 300, 120, 500), ("7",)),  # left edge, across the horizontal midline
        ((10, 10, 990, 790), (ALL,)),  # everything: 'all' beats the two halves that tie on pixels
    ],
)
def test_single_box_maps_to_the_cheapest_cover(box, expected):
    selection = boxes_to_crops([box], W, H)
    assert selection.crop_ids == expected
    assert selection.coverage == pytest.approx(1.0)


def test_chosen_crops_contain_the_evidence():
    box = Box(600, 100, 700, 300)
    selection = boxes_to_crops([box], W, H)
    covered = sum(crop_box(c, W, H).intersection(box) for c in selection.crop_ids)
    assert covered >= box.area


def test_two_distant_boxes_take_two_quadrants():
    selection = boxes_to_crops([(10, 10, 60, 60), (940, 740, 990, 790)], W, H)
    assert selection.crop_ids == ("0", "3")
    assert selection.pixels == 2 * (W // 2) * (H // 2)


def test_partial_coverage_threshold_allows_a_cheaper_crop():
    box = (400, 100, 560, 200)  # 100 px left of the vertical midline, 60 px right of it
    assert boxes_to_crops([box], W, H, min_coverage=1.0).crop_ids == ("5",)
    partial = boxes_to_crops([box], W, H, min_coverage=0.6)
    assert partial.crop_ids == ("0",)
    assert partial.coverage == pytest.approx(100 / 160)


def test_boxes_are_clipped_to_the_image():
    assert boxes_to_crops([(-50, -50, 40, 40)], W, H).crop_ids == ("0",)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="at least one"):
        boxes_to_crops([], W, H)
    with pytest.raises(ValueError, match="min_coverage"):
        boxes_to_crops([(0, 0, 5, 5)], W, H, min_coverage=0)
    with pytest.raises(ValueError):
        boxes_to_crops([(2000, 2000, 2100, 2100)], W, H)  # entirely outside


def test_paper_iou_rule_returns_every_crop_above_threshold_and_nothing_for_small_boxes():
    assert iou_crops(Box(0, 0, 450, 380), W, H) == ("0",)
    assert iou_crops(Box(0, 0, 500, 400), W, H) == ("0", "5", "7")  # IoU exactly 0.5 with both halves
    assert iou_crops(Box(0, 0, 1000, 380), W, H) == ("5",)
    assert iou_crops(Box(10, 10, 60, 60), W, H) == ()


def test_coverage_of_given_crops():
    box = Box(450, 100, 550, 200)  # straddles the vertical midline of a 1000 x 800 image
    assert coverage([box], ["0"], W, H) == pytest.approx(0.5)
    assert coverage([box], ["0", "1"], W, H) == 1.0 and coverage([box], ["all"], W, H) == 1.0
    assert coverage([box], [], W, H) == 0.0
    assert coverage([box, Box(0, 700, 10, 800)], ["5"], W, H) == pytest.approx(100 * 100 / (100 * 100 + 10 * 100))
    with pytest.raises(ValueError, match="empty box"):
        coverage([(2000, 2000, 2100, 2100)], ["0"], W, H)  # entirely outside
    with pytest.raises(ValueError, match="at least one"):
        coverage([], ["0"], W, H)
