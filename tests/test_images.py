import numpy as np
import pytest
from PIL import Image

from awares.errors import ImageInputError
from awares.images import MAX_IMAGE_PIXELS, load_image


def test_missing_file(tmp_path):
    with pytest.raises(ImageInputError, match="does not exist"):
        load_image(tmp_path / "nope.png")


def test_not_an_image(tmp_path):
    path = tmp_path / "fake.png"
    path.write_text("hello")
    with pytest.raises(ImageInputError, match="cannot read"):
        load_image(path)


def test_truncated_file(tmp_path):
    path = tmp_path / "cut.png"
    Image.effect_noise((300, 300), 50).convert("RGB").save(path)
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(ImageInputError, match="corrupt or truncated"):
        load_image(path)


@pytest.mark.parametrize(
    "size, message", [((1, 1), "at least 28"), ((20000, 50), "aspect ratio"), ((27, 400), "at least 28")]
)
def test_unusable_sizes(tmp_path, size, message):
    path = tmp_path / "odd.png"
    Image.new("RGB", size).save(path)
    with pytest.raises(ImageInputError, match=message):
        load_image(path)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (12000, 8000)).save(path)  # 96 Mpx, a few kB on disk
    assert 12000 * 8000 > MAX_IMAGE_PIXELS
    with pytest.raises(ImageInputError, match="limit"):
        load_image(path)


def test_palette_with_transparency_is_composited_on_white(tmp_path):
    image = Image.new("P", (64, 64), 0)
    image.putpalette([255, 0, 0] + [0, 0, 255] * 255)
    image.info["transparency"] = 0
    path = tmp_path / "p.png"
    image.save(path, transparency=0)
    out = load_image(path)
    assert out.mode == "RGB" and out.getpixel((5, 5)) == (255, 255, 255)


@pytest.mark.parametrize("mode", ["LA", "RGBA", "CMYK", "L", "1"])
def test_other_modes_become_rgb(mode):
    out = load_image(Image.new(mode, (64, 48)))
    assert out.mode == "RGB" and out.size == (64, 48)


def test_la_transparency_uses_white():
    out = load_image(Image.new("LA", (40, 40), (0, 0)))
    assert out.getpixel((0, 0)) == (255, 255, 255)


def test_16_bit_images_are_rescaled_not_clipped(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 64, dtype=np.uint16), (32, 1))
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)
    out = load_image(path)
    assert out.getpixel((0, 0)) == (0, 0, 0)
    assert out.getpixel((63, 0)) == (255, 255, 255)
    assert 100 < out.getpixel((32, 0))[0] < 155


def test_exif_rotation_is_applied(tmp_path):
    image = Image.new("RGB", (200, 100), (0, 0, 0))
    image.paste((255, 0, 0), (0, 0, 20, 100))  # red stripe on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif, quality=95)
    out = load_image(path)
    assert out.size == (100, 200)
    red, green, _ = out.getpixel((50, 5))  # the stripe is now at the top
    assert red > 200 and green < 60
