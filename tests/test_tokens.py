import pytest
from PIL import Image
from transformers import Qwen2VLImageProcessorPil

from awares.crops import VisionGrid, low_res_size
from awares.models import load_processor

SIZES = [
    (28, 28),
    (56, 56),
    (100, 37),
    (224, 224),
    (300, 200),
    (333, 777),
    (640, 480),
    (1000, 30),
    (1344, 896),
    (1920, 1080),
    (2000, 2000),
    (4000, 3000),
    (29, 5000),
    (150, 149),
]


@pytest.fixture(scope="module", params=["tiny", "qwen2.5-vl"])
def processor(request, tiny_dir):
    """The tiny model's processor (4x4 merge) and one with Qwen2.5-VL's own settings (2x2 merge)."""
    processor = load_processor(tiny_dir)
    if request.param == "qwen2.5-vl":
        processor.image_processor = Qwen2VLImageProcessorPil(min_pixels=32 * 28 * 28, max_pixels=2048 * 28 * 28)
    return processor


def test_grid_settings_are_read_from_the_processor(processor):
    grid = VisionGrid.from_processor(processor)
    assert grid.patch_size == 14 and grid.merge_size == processor.image_processor.merge_size
    assert grid.max_pixels == processor.image_processor.size["longest_edge"]


@pytest.mark.parametrize("size", SIZES)
def test_token_count_matches_the_processor_grid(processor, size):
    grid = VisionGrid.from_processor(processor)
    out = processor.image_processor(Image.new("RGB", size), return_tensors="pt")
    t, h, w = out["image_grid_thw"][0].tolist()
    assert grid.tokens(*size) == t * h * w // grid.merge_size**2
    # and the prompt really carries that many image tokens
    text = "<|vision_start|><|image_pad|><|vision_end|>"
    ids = processor(text=[text], images=[Image.new("RGB", size)], return_tensors="pt")["input_ids"][0]
    assert int((ids == processor.image_token_id).sum()) == grid.tokens(*size)


def test_low_res_view_retains_a_quarter_of_the_tokens_on_aligned_images():
    grid = VisionGrid(min_pixels=32 * 28 * 28, max_pixels=2048 * 28 * 28)
    for size in [(1344, 896), (1120, 1120), (672, 1344)]:
        assert grid.tokens(*low_res_size(*size)) / grid.tokens(*size) == pytest.approx(0.25)


def test_above_the_pixel_cap_the_low_res_view_still_costs_about_a_quarter():
    grid = VisionGrid(min_pixels=32 * 28 * 28, max_pixels=2048 * 28 * 28)
    for size in [(3000, 4000), (4000, 3000), (6000, 1500), (1500, 1100), (8000, 8000)]:
        plain = grid.tokens(*low_res_size(*size)) / grid.tokens(*size)
        capped = grid.tokens(*low_res_size(*size, max_pixels=grid.max_pixels)) / grid.tokens(*size)
        assert capped <= 0.30, (size, capped)
        assert plain > 0.30 or size == (1500, 1100)  # at plain 0.5x, a photo costs what the full image costs
    for size in [(1344, 896), (1001, 667), (28, 500)]:  # within the cap: exactly the reference's size
        assert low_res_size(*size, max_pixels=grid.max_pixels) == low_res_size(*size)


def test_pixel_budget_caps_the_full_image():
    grid = VisionGrid(min_pixels=32 * 28 * 28, max_pixels=2048 * 28 * 28)
    assert grid.tokens(4000, 3000) <= 2048
    assert grid.tokens(20, 20) >= 32  # small images are upscaled to min_pixels


def test_too_elongated_images_are_refused():
    with pytest.raises(ValueError, match="elongated"):
        VisionGrid().tokens(20000, 50)


def test_below_the_processors_floor_the_view_keeps_the_detail_its_tokens_pay_for():
    """Qwen3-VL's published processor: 65,536 px at least, 32-px cells."""
    grid = VisionGrid(min_pixels=65_536, max_pixels=16_777_216, patch_size=16, merge_size=2)
    floor = dict(max_pixels=grid.max_pixels, min_pixels=grid.min_pixels)
    assert low_res_size(224, 224, **floor) == (224, 224)  # a plain 0.5x view would be enlarged back to the floor
    assert grid.tokens(*low_res_size(224, 224)) == grid.tokens(224, 224)  # which costs as much as the full image
    width, height = low_res_size(400, 300, **floor)
    assert width * height >= grid.min_pixels and (width, height) < (400, 300)
    assert low_res_size(2048, 1536, **floor) == low_res_size(2048, 1536)  # large images: the plain half
    assert grid.tokens(*low_res_size(2048, 1536, **floor)) / grid.tokens(2048, 1536) == pytest.approx(0.25, abs=0.01)
