"""A contact sheet: one row per image, one column per view (input | colorized | mask | ...), labelled.

Pure array code: images in, one uint8 RGB array out; the caller encodes and writes it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

BACKGROUND = (245, 245, 245)
TEXT = (20, 20, 20)


def _fit(image: np.ndarray, cell: int) -> Image.Image:
    """uint8 (H, W) or (H, W, 3) -> RGB image fitted inside cell x cell, aspect kept, centred on the background."""
    im = Image.fromarray(image).convert("RGB")
    scale = cell / max(im.width, im.height)
    im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (cell, cell), BACKGROUND)
    canvas.paste(im, ((cell - im.width) // 2, (cell - im.height) // 2))
    return canvas


def contact_sheet(rows: list[tuple[str, list[np.ndarray | None]]], headers: list[str], cell: int = 192,
                  pad: int = 6, label_height: int = 18) -> np.ndarray:
    """Rows of (label, images) -> uint8 RGB (H, W, 3) sheet.

    Each row has one image per header (uint8 gray (H, W) or RGB (H, W, 3), any size; None leaves the cell
    empty); images are fitted into ``cell`` x ``cell`` pixels. Column headers on top, row labels under each row.
    """
    if not rows:
        raise ValueError("contact_sheet needs at least one row")
    for label, images in rows:
        if len(images) != len(headers):
            raise ValueError(f"row {label!r} has {len(images)} images for {len(headers)} headers {headers}")
    width = pad + len(headers) * (cell + pad)
    row_height = cell + label_height + pad
    height = label_height + pad + len(rows) * row_height
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for c, header in enumerate(headers):
        draw.text((pad + c * (cell + pad) + 2, 3), header, fill=TEXT)
    for r, (label, images) in enumerate(rows):
        top = label_height + pad + r * row_height
        for c, image in enumerate(images):
            if image is not None:
                sheet.paste(_fit(image, cell), (pad + c * (cell + pad), top))
        draw.text((pad + 2, top + cell + 2), label, fill=TEXT)
    return np.asarray(sheet)
