"""JPEG decode where the model runs: on a GPU actor with nvJPEG (``torchvision.io.decode_jpeg`` on CUDA, batched),
so that the CPU tasks of a GPU node only read bytes; Pillow for what the GPU decoder refuses.

The decode stage (:func:`semcolor.bulk.stages.decode_rows` with ``defer_jpeg``) checks each JPEG's header (format,
pixel limit) on CPU and passes its bytes on; the model actor calls :func:`decode_to_l8` on its device. Output per
row: the full-resolution lightness ``l8`` uint8 (H, W) (CIELAB L x 255/100, the same float32 lookup tables and cube
root as :func:`semcolor.core.lightness.rgb_to_l8`, computed on the device, so only H x W bytes come back), whether
the source has colour, or the :class:`semcolor.core.decode.DataError` that made Pillow give up too.

Fallbacks, per image: a batch nvJPEG refuses (one bad image fails the whole list) is decoded image by image; an
image it still refuses (CMYK, arithmetic coding, a truncated file) goes to Pillow on CPU, exactly as the CPU
layout decodes it; what Pillow refuses is recorded with its reason. The same code runs with ``device="cpu"``
(torchvision's libjpeg-turbo), which is how the tests run it.

torchvision 0.29 deprecates its image codecs in favour of TorchCodec (a DeprecationWarning on every call, silenced
here): this module is the one place to switch once TorchCodec's CUDA JPEG path is measured on a GPU node.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from semcolor.bulk.signals import COLOR_STRIDE, source_has_color
from semcolor.core.decode import DataError, decode_image
from semcolor.core.lightness import EPS, KAPPA, L8_SCALE, rgb_to_l8, srgb_luminance_luts

JPEG_MAGIC = b"\xff\xd8\xff"


def is_jpeg(data: bytes) -> bool:
    """Whether ``data`` starts like a JPEG file (SOI marker)."""
    return data[:3] == JPEG_MAGIC


@dataclass
class Decoded:
    """One source decoded: ``l8`` uint8 (H, W) and whether it has colour, or ``error`` (a DataError)."""

    l8: np.ndarray | None = None
    color: bool = False
    error: DataError | None = None
    decoder: str = ""
    """``nvjpeg`` / ``libjpeg`` (torchvision on the device) or ``pillow`` (the fallback)."""


def _rgb_to_l8(rgb: torch.Tensor, luts: torch.Tensor) -> torch.Tensor:
    """uint8 RGB (3, H, W) on any device -> uint8 l8 (H, W): :func:`semcolor.core.lightness.rgb_to_l8`'s math."""
    y = luts[0][rgb[0].long()] + luts[1][rgb[1].long()] + luts[2][rgb[2].long()]
    f = torch.where(y > EPS, torch.pow(y, 1.0 / 3.0), (KAPPA * y + 16.0) / 116.0)
    return torch.round((116.0 * f - 16.0) * L8_SCALE).clamp(0, 255).to(torch.uint8)


def _has_color(rgb: torch.Tensor, tolerance: int = 2) -> bool:
    """uint8 RGB (3, H, W) on any device: channels apart by more than ``tolerance`` somewhere (sampled)."""
    x = rgb[:, ::COLOR_STRIDE, ::COLOR_STRIDE].short()
    return bool(((x[0] - x[1]).abs().max() > tolerance) or ((x[1] - x[2]).abs().max() > tolerance))


def _pillow(data: bytes, key: str, max_pixels: int) -> Decoded:
    try:
        rgb = decode_image(data, max_pixels=max_pixels, key=key)
    except DataError as exc:
        return Decoded(error=exc, decoder="pillow")
    return Decoded(l8=rgb_to_l8(rgb), color=source_has_color(rgb), decoder="pillow")


def decode_to_l8(blobs: list[bytes], keys: list[str], device: torch.device | str, max_pixels: int
                 ) -> list[Decoded]:
    """JPEG bytes (headers already checked) -> one :class:`Decoded` per blob, decoded on ``device`` in one batch
    (EXIF orientation applied), image by image where the batch fails, Pillow where the device decoder refuses."""
    from torchvision.io import ImageReadMode, decode_jpeg

    device = torch.device(device)
    luts = torch.from_numpy(np.stack(srgb_luminance_luts())).to(device)
    warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                            category=DeprecationWarning)
    tensors = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]
    name = "nvjpeg" if device.type == "cuda" else "libjpeg"

    def finish(rgb: torch.Tensor) -> Decoded:
        rgb = rgb.to(device)
        return Decoded(l8=_rgb_to_l8(rgb, luts).cpu().numpy(), color=_has_color(rgb), decoder=name)

    try:
        images = decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True)
        return [finish(img) for img in images]
    except RuntimeError:  # one image the device decoder refuses fails the whole list: go one by one
        pass
    out = []
    for data, tensor, key in zip(blobs, tensors, keys):
        try:
            out.append(finish(decode_jpeg(tensor, mode=ImageReadMode.RGB, device=device,
                                          apply_exif_orientation=True)))
        except RuntimeError:
            out.append(_pillow(data, key, max_pixels))
    return out
