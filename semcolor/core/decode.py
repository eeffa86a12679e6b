"""Decode image and mask bytes with Pillow into compact uint8 arrays, with typed errors.

- Images: EXIF orientation applied; modes 1, L, LA, P, RGB, RGBA, CMYK, YCbCr, I;16*, I, F all become
  RGB uint8 (H, W, 3). Alpha is composited over white. 16-bit data is scaled (value / 257), never clipped;
  ``I`` (32-bit int) is read as 16-bit when all values lie in [0, 65535], else scaled from its min..max;
  ``F`` is read as [0, 1] when all values lie there, else scaled from its min..max.
- Masks: single channel uint8 (H, W), values kept as they are (binary 0/255 or class ids, 255 = ignore).
  Palette masks give their palette indices; RGB masks must be gray (R = G = B).
- A decompression-bomb limit: width x height is checked from the header before any pixel is decoded.

Every failure is a :class:`DataError` subclass carrying ``key``, ``kind`` (a short stable tag for
records and counts) and ``reason`` (what went wrong and what to do).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

DEFAULT_MAX_PIXELS: int = 100_000_000
"""Images or masks with more pixels (width x height) than this are refused as decompression bombs."""
IMAGE_EXTENSIONS: frozenset[str] = frozenset({
    ".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pbm", ".jp2",
})
"""File extensions (any case) read as images by every command: training pairs, masks and bulk sources alike."""
IGNORE_INDEX: int = 255
"""Mask value (and training target) of pixels that no loss or metric counts, with n_classes > 2."""
OK = "ok"
ERROR = "error"
"""The status of one input, in every record and every stage's rows: OK, or ERROR with a ``kind`` and a ``reason``
(``kind``: a :class:`DataError` kind, or READ_ERROR)."""
READ_ERROR = "read_error"
"""Error kind of an input whose bytes could not be read (missing object, permissions, network)."""


class DataError(ValueError):
    """A bad input file. ``kind`` is a stable tag (``empty``, ``not_image``, ...); ``reason`` says why."""

    kind = "bad_input"

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"{key}: {reason}" if key else reason)


class EmptyFileError(DataError):
    """The file has zero bytes."""

    kind = "empty"


class NotAnImageError(DataError):
    """Pillow recognizes no image format in the bytes (e.g. text saved as .jpg)."""

    kind = "not_image"


class CorruptImageError(DataError):
    """The header was read but the pixels could not be decoded (truncated or damaged file)."""

    kind = "corrupt"


class ImageTooLargeError(DataError):
    """More pixels than the configured limit (decompression-bomb guard)."""

    kind = "too_large"


class UnsupportedModeError(DataError):
    """A pixel mode or value range that cannot be converted without guessing."""

    kind = "unsupported"


def open_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, key: str = "") -> Image.Image:
    """Open ``data`` lazily (header only) and check its pixel count against ``max_pixels``."""
    if max_pixels <= 0:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    if len(data) == 0:
        raise EmptyFileError(key, "zero-byte file; re-export or remove it")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:  # Pillow refuses > 2 * Image.MAX_IMAGE_PIXELS itself
        pillow_limit = 2 * int(Image.MAX_IMAGE_PIXELS or 0)
        hint = ("raise max_pixels if the file is trusted" if max_pixels < pillow_limit else
                f"raise PIL.Image.MAX_IMAGE_PIXELS too (now {Image.MAX_IMAGE_PIXELS}), Pillow's own guard")
        raise ImageTooLargeError(
            key, f"more pixels than the limit of {min(max_pixels, pillow_limit)} ({exc}); {hint}"
        ) from exc
    except Image.UnidentifiedImageError as exc:
        raise NotAnImageError(key, f"not a recognized image format ({len(data)} bytes)") from exc
    except Exception as exc:  # Pillow plugins raise many types on a damaged header
        raise CorruptImageError(key, f"unreadable header: {type(exc).__name__}: {exc}") from exc
    width, height = im.size
    if width * height > max_pixels:
        raise ImageTooLargeError(
            key, f"{width}x{height} = {width * height} pixels exceeds the limit of {max_pixels}; "
            "raise max_pixels if the file is trusted"
        )
    return im


def _load_oriented(im: Image.Image, key: str, draft_size: int | None) -> tuple[Image.Image, tuple[int, int]]:
    """Decode the pixels (at reduced JPEG scale when ``draft_size`` allows), apply EXIF orientation.

    Returns the oriented image and its full-resolution (width, height) as displayed.
    """
    width, height = im.size
    try:
        if draft_size is not None and im.format == "JPEG":
            im.draft(None, (draft_size, draft_size))  # DCT scaling; keeps both sides >= draft_size
        im.load()
        if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # orientations that transpose swap the sides
            width, height = height, width
        ImageOps.exif_transpose(im, in_place=True)
        return im, (width, height)
    except Exception as exc:  # truncated data raises OSError, other damage SyntaxError/ValueError/...
        raise CorruptImageError(key, f"cannot decode pixels: {type(exc).__name__}: {exc}") from exc


def _scale_to_uint8(arr: np.ndarray, mode: str, key: str) -> np.ndarray:
    """16/32-bit int or float pixels -> uint8 by scaling (rules in the module docstring)."""
    if mode.startswith("I;16"):
        return np.round(arr.astype(np.float32) / 257.0).astype(np.uint8)
    values = arr.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise UnsupportedModeError(key, f"mode {mode} image holds NaN or infinite values")
    lo, hi = float(values.min()), float(values.max())
    if mode == "I" and lo >= 0 and hi <= 65535:
        return np.round(values / 257.0).astype(np.uint8)
    if mode == "F" and lo >= 0 and hi <= 1:
        return np.round(values * 255.0).astype(np.uint8)
    span = hi - lo if hi > lo else 1.0
    return np.round((values - lo) * (255.0 / span)).astype(np.uint8)


def rgb_image(im: Image.Image, key: str = "") -> Image.Image:
    """A decoded Pillow image of any supported mode -> a Pillow RGB image (rules in the module docstring)."""
    mode = im.mode
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_scale_to_uint8(np.asarray(im), mode, key), "L").convert("RGB")
    if mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
        mode = im.mode
    if mode in ("LA", "RGBA", "PA", "La", "RGBa"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode == "RGB":
        return im
    if mode in ("1", "L", "CMYK", "YCbCr", "RGBX"):
        return im.convert("RGB")
    raise UnsupportedModeError(
        key, f"image mode {mode!r} is not supported; supported: 1, L, LA, P, RGB, RGBA, CMYK, YCbCr, I;16, I, F"
    )


def mask_image(im: Image.Image, key: str = "") -> Image.Image:
    """A decoded Pillow mask -> a Pillow L image holding the same values (binary 0/255 or class ids)."""
    mode = im.mode
    if mode == "L":
        return im
    if mode == "P":
        return im.getchannel(0)  # the palette indices themselves, not their colors
    if mode == "1":
        return im.convert("L")
    if mode == "LA":
        return im.getchannel("L")
    if mode in ("RGB", "RGBA"):
        r, g, b = (np.asarray(im.getchannel(c)) for c in "RGB")
        if not (np.array_equal(r, g) and np.array_equal(r, b)):
            raise UnsupportedModeError(
                key, "mask has color (R, G, B differ); save masks as single-channel L or P images of class ids"
            )
        return im.getchannel("R")
    if mode.startswith("I"):
        arr = np.asarray(im)
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 255):
            raise UnsupportedModeError(
                key, f"mask values span {int(arr.min())}..{int(arr.max())}; masks hold 0..255 (class ids, 255 = ignore)"
            )
        return Image.fromarray(arr.astype(np.uint8), "L")
    raise UnsupportedModeError(key, f"mask mode {mode!r} is not supported; use L (0/255 or class ids) or P")


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, key: str = "",
                 draft_size: int | None = None) -> np.ndarray:
    """Image bytes -> RGB uint8 (H, W, 3) as displayed (EXIF orientation applied).

    ``draft_size``: for JPEGs, let the decoder skip detail (DCT scaling) while keeping both sides
    >= draft_size pixels; use it when the image is resized down to that size next.
    Raises a :class:`DataError` subclass naming ``key`` and the reason.
    """
    im, _ = _load_oriented(open_image(data, max_pixels, key), key, draft_size)
    return np.asarray(rgb_image(im, key))


def _rgb_at(data: bytes, size: int | None, max_pixels: int, key: str) -> tuple[Image.Image, tuple[int, int]]:
    """Image bytes -> (RGB image squashed to (size, size), or as it is when ``size`` is None; its own EXIF-oriented
    (width, height)). Raises :class:`DataError`."""
    im, image_size = _load_oriented(open_image(data, max_pixels, key), key, size)
    rgb = rgb_image(im, key)
    if size is not None:
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)  # antialiased: area-like
    return rgb, image_size


def decode_photo(data: bytes, size: int, max_pixels: int = DEFAULT_MAX_PIXELS, key: str = "") -> np.ndarray:
    """A photo without a mask -> RGB uint8 (size, size, 3), squashed as :func:`decode_pair` squashes its image.
    Raises :class:`DataError` naming ``key``."""
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    return np.asarray(_rgb_at(data, size, max_pixels, key)[0])


@dataclass(frozen=True)
class Sample:
    """One decoded pair: ``rgb`` uint8 (H, W, 3), ``mask`` uint8 (H, W) (model size, or the image's own)."""

    rgb: np.ndarray
    mask: np.ndarray
    mask_resized: bool
    """True when the mask's size differed from its image's (it was resized with nearest neighbour)."""


def decode_pair(image: bytes, mask: bytes, size: int | None, max_pixels: int = DEFAULT_MAX_PIXELS,
                key: str = "") -> Sample:
    """Image and mask bytes -> a :class:`Sample` squashed to (size, size), or at the image's own (EXIF-oriented)
    resolution when ``size`` is None. Raises :class:`DataError`.

    A mask whose size differs from its image's full-resolution, EXIF-oriented size is resized to it (nearest
    neighbour, class ids never blended) and flagged ``mask_resized``. Reasons start with ``image:`` or ``mask:``,
    naming the file that failed.
    """
    if size is not None and size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    try:
        rgb, image_size = _rgb_at(image, size, max_pixels, key)
    except DataError as exc:
        raise type(exc)(key, f"image: {exc.reason}") from exc
    try:
        raw_mask, _ = _load_oriented(open_image(mask, max_pixels, key), key, None)
        mask_l = mask_image(raw_mask, key)
    except DataError as exc:
        raise type(exc)(key, f"mask: {exc.reason}") from exc
    mask_resized = mask_l.size != image_size
    target = (size, size) if size is not None else image_size
    if mask_l.size != target:
        mask_l = mask_l.resize(target, Image.Resampling.NEAREST)  # class ids are never blended
    return Sample(rgb=np.asarray(rgb), mask=np.asarray(mask_l), mask_resized=mask_resized)
