"""Load any user image as an upright 8-bit RGB ``PIL.Image``, or fail with a clear ``ImageInputError``."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .crops import MAX_ASPECT_RATIO, MIN_VIEW_SIDE
from .errors import ImageInputError

# PIL's own decompression-bomb threshold; larger images are refused before decoding.
MAX_IMAGE_PIXELS = 89_478_485
# EXIF orientation; its values 5-8 turn the image a quarter.
ORIENTATION_TAG = 0x0112
# Halves of the image are twice as elongated as the image and must stay within the processor's limit.
MAX_IMAGE_ASPECT = MAX_ASPECT_RATIO // 2


def check_size(width: int, height: int, name: str = "image") -> None:
    """Refuse sizes the pipeline cannot process: too small, too many pixels, or too elongated."""
    if min(width, height) < MIN_VIEW_SIDE:
        raise ImageInputError(f"{name} is {width}x{height}; each side must be at least {MIN_VIEW_SIDE} px")
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageInputError(
            f"{name} is {width}x{height} ({width * height:,} px), above the limit of {MAX_IMAGE_PIXELS:,} px"
        )
    if max(width, height) / min(width, height) > MAX_IMAGE_ASPECT:
        raise ImageInputError(f"{name} is {width}x{height}; its aspect ratio must be at most {MAX_IMAGE_ASPECT}:1")


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB: transparency composited on white, 16-bit and float images rescaled, CMYK converted."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        lo, hi = float(pixels.min()), float(pixels.max())
        scaled = (pixels - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(pixels)
        image = Image.fromarray(scaled.round().astype(np.uint8), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image.convert("RGB")


def load_image(source: str | Path | Image.Image) -> Image.Image:
    """Open ``source`` (a path or an image), apply its EXIF orientation, check its size, return RGB."""
    name = str(source) if not isinstance(source, Image.Image) else "image"
    if isinstance(source, Image.Image):
        image = source
    else:
        path = Path(source)
        if not path.is_file():
            raise ImageInputError(f"image file {path} does not exist")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(path)
                check_size(*image.size, name=name)
                image.load()
        except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise ImageInputError(f"cannot read {path} as an image: {err}") from err
        except OSError as err:
            raise ImageInputError(f"cannot read {path}: the file is corrupt or truncated ({err})") from err
        except ValueError as err:  # e.g. a PNG text chunk that inflates past Pillow's limit
            raise ImageInputError(f"cannot read {path} as an image: {err} (Pillow's decompression limit)") from err
    if image.mode == "RGB" and image.getexif().get(ORIENTATION_TAG, 1) == 1:
        check_size(*image.size, name=name)
        return image  # already upright RGB: no copy (the engine gets images the harness decoded)
    image = ImageOps.exif_transpose(image)
    check_size(*image.size, name=name)
    return to_rgb(image)


def image_size(path: str | Path) -> tuple[int, int]:
    """The (width, height) ``load_image`` gives ``path``, EXIF orientation applied, read from the
    file's header without decoding its pixels."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            rotated = image.getexif().get(ORIENTATION_TAG) in (5, 6, 7, 8)  # a quarter turn swaps the sides
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise ImageInputError(f"cannot read {path} as an image: {err}") from err
    return (height, width) if rotated else (width, height)
