"""Colour photos without masks, for the colour half of training: listing a prefix or reading a manifest.

A source is a prefix (every image file below it) or a manifest (Parquet, or CSV when the URL ends in ``.csv``) with
an ``image`` column and an empty or absent ``mask`` column (what `semcolor manifest --images URL --out URL` writes
without ``--masks``). Photos are a :class:`pyarrow.Table` with string columns ``key`` and ``image`` (URL); the Ray
Data read is :func:`semcolor.data.pipeline.load_photo_dataset`.
"""

from __future__ import annotations

import pyarrow as pa

from semcolor.core import storage
from semcolor.core.decode import IMAGE_EXTENSIONS
from semcolor.data.pairs import is_manifest, read_manifest_columns

PHOTO_SCHEMA = pa.schema([("key", pa.string()), ("image", pa.string())])


def list_photos(url: str, what: str = "--photos") -> pa.Table:
    """One source -> photos ``key``, ``image``. ValueError naming ``what`` (the option) and ``url`` when it holds no
    image (or, for a manifest, when its mask column has values: pairs train with --manifest, not --photos)."""
    if is_manifest(url):
        keys, urls = read_manifest_columns(url, ("image",), optional=("mask",))
        masked = sum(1 for m in urls.get("mask", []) if m)
        if masked:
            raise ValueError(f"{what} {url}: {masked} row(s) have a mask; photos without masks have an empty mask "
                             "column (pairs train with --manifest or --images/--masks)")
        images = urls["image"]
    else:
        try:
            images = storage.list_files(url, IMAGE_EXTENSIONS)
        except FileNotFoundError:
            raise ValueError(f"{what} {url}: no such folder or prefix") from None
        keys = [storage.relative_key(u, url) for u in images]
    if not images:
        raise ValueError(f"{what} {url}: no image files (extensions {sorted(IMAGE_EXTENSIONS)})")
    return pa.table({"key": keys, "image": images}, schema=PHOTO_SCHEMA)


def load_photos(urls: list[str]) -> pa.Table:
    """Every source of ``--photos`` (see :func:`list_photos`), concatenated in the order given; with several sources
    each key is prefixed by its source's number (``2:img001``), so keys stay unique and a bad photo's record names
    its own file."""
    if not urls:
        raise ValueError("--photos needs at least one URL (a prefix or a manifest)")
    tables = [list_photos(url) for url in urls]
    if len(tables) > 1:
        tables = [t.set_column(0, "key", pa.array([f"{i + 1}:{k}" for k in t["key"].to_pylist()], pa.string()))
                  for i, t in enumerate(tables)]
    return pa.concat_tables(tables)
