"""Training pairs: pairing images with masks by key, manifests (one reader for every command), the split.

Pairs are a :class:`pyarrow.Table` with string columns ``key``, ``image``, ``mask`` (URLs), from either
two prefixes (``IMAGES/<key>.<ext>`` + ``MASKS/<key>.<ext>``, nested folders allowed) or a manifest
(Parquet or CSV with columns ``image``, ``mask`` and optionally ``key``): see :func:`load_pairs`.
The Ray Data read of the pairs is :mod:`semcolor.data.pipeline`.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import posixpath
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from semcolor.core import storage
from semcolor.core.decode import IMAGE_EXTENSIONS
from semcolor.options import option

log = logging.getLogger(__name__)

PAIR_SCHEMA = pa.schema([("key", pa.string()), ("image", pa.string()), ("mask", pa.string())])


def images_option() -> Any:
    """The ``--images`` option of every command that reads pairs."""
    return option(None, help="URL of the images prefix (local path, file://, s3://, any fsspec URL)")


def masks_option() -> Any:
    """The ``--masks`` option of every command that reads pairs."""
    return option(None, help="URL of the masks prefix, paired with --images by relative key")


def manifest_option() -> Any:
    """The ``--manifest`` option of every command that reads pairs."""
    return option(None, help="URL of a Parquet/CSV manifest with columns image, mask (URLs) and optionally key, "
                  "instead of --images/--masks")


# ---------------------------------------------------------------- pairing and manifests


@dataclass(frozen=True)
class Pairing:
    """The outcome of pairing two prefixes: the pairs and every file that could not be paired."""

    pairs: pa.Table
    orphan_images: list[str] = field(default_factory=list)
    """Image URLs with no mask of the same key."""
    orphan_masks: list[str] = field(default_factory=list)
    """Mask URLs with no image of the same key."""
    ambiguous: list[str] = field(default_factory=list)
    """URLs whose key occurs twice under one prefix (e.g. a.jpg and a.png), and their partners; none is used."""


def _by_key(prefix: str, extensions: frozenset[str]) -> dict[str, list[str]]:
    """key -> the URLs under ``prefix`` with that key (more than one when only the extension differs)."""
    groups: dict[str, list[str]] = {}
    for url in storage.list_files(prefix, extensions):
        groups.setdefault(storage.relative_key(url, prefix), []).append(url)
    return groups


def pair_prefixes(images: str, masks: str, extensions: frozenset[str] = IMAGE_EXTENSIONS) -> Pairing:
    """List both prefixes and pair files by relative key; unpaired files are returned and logged.

    A key held by two files on one side (``a.jpg`` and ``a.png``) is ambiguous: all its files on both
    sides go to ``Pairing.ambiguous`` and none is used.
    """
    image_groups, mask_groups = _by_key(images, extensions), _by_key(masks, extensions)
    clash = {k for g in (image_groups, mask_groups) for k, urls in g.items() if len(urls) > 1}
    ambiguous = sorted(u for g in (image_groups, mask_groups) for k in clash for u in g.get(k, []))
    image_by_key = {k: v[0] for k, v in image_groups.items() if k not in clash}
    mask_by_key = {k: v[0] for k, v in mask_groups.items() if k not in clash}
    keys = sorted(image_by_key.keys() & mask_by_key.keys())
    pairs = pa.table({"key": keys, "image": [image_by_key[k] for k in keys],
                      "mask": [mask_by_key[k] for k in keys]}, schema=PAIR_SCHEMA)
    result = Pairing(
        pairs=pairs,
        orphan_images=sorted(image_by_key[k] for k in image_by_key.keys() - mask_by_key.keys()),
        orphan_masks=sorted(mask_by_key[k] for k in mask_by_key.keys() - image_by_key.keys()),
        ambiguous=ambiguous,
    )
    for name, urls in (("images without a mask", result.orphan_images),
                       ("masks without an image", result.orphan_masks),
                       ("files sharing a key (unused)", result.ambiguous)):
        if urls:
            log.warning("%d %s, e.g. %s", len(urls), name, ", ".join(urls[:3]))
    if not keys:
        log.warning("no pairs between %s and %s", images, masks)
    return result


def write_manifest(pairs: pa.Table, url: str) -> None:
    """Write pairs (``key``, ``image``, ``mask``) to ``url``: Parquet, or CSV when it ends in ``.csv``."""
    buf = io.BytesIO()
    table = pairs.select(["key", "image", "mask"])
    if url.lower().endswith(".csv"):
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, buf)
    else:
        import pyarrow.parquet as pq

        pq.write_table(table, buf)
    storage.write_bytes(url, buf.getvalue())


def _derive_keys(images: list[str]) -> list[str]:
    """Keys for a manifest without a ``key`` column: image paths under their common folder, no extension."""
    paths = [u.split("://", 1)[-1] for u in images]
    root = posixpath.commonpath([posixpath.dirname(p) or "/" for p in paths]) if paths else ""
    return [posixpath.splitext(p[len(root):].lstrip("/"))[0] for p in paths]


def _absolute(url: str, base: str) -> str:
    """A manifest entry: URLs and absolute paths as they are; relative paths against the manifest's folder."""
    return url if storage.scheme_of(url) or os.path.isabs(url) else storage.join(base, url)


MANIFEST_SUFFIXES = (".parquet", ".csv")


def is_manifest(url: str) -> bool:
    """True when ``url`` names a manifest file (``.parquet`` or ``.csv``) rather than a prefix."""
    return url.rstrip("/").lower().endswith(MANIFEST_SUFFIXES)


def read_manifest_columns(url: str, columns: tuple[str, ...], optional: tuple[str, ...] = ()
                          ) -> tuple[list[str], dict[str, list[str]]]:
    """A manifest (Parquet, or CSV when ``url`` ends in ``.csv``) -> (keys, {column: URLs}) for ``columns``, and for
    those of ``optional`` it has (where an empty value or null is ``""``).

    Relative entries are resolved against the manifest's folder; a missing ``key`` column is derived from the
    first column's paths under their common folder. Keys are not checked for uniqueness here.
    """
    data = storage.read_bytes(url)
    if url.lower().endswith(".csv"):
        import pyarrow.csv as pacsv

        types = {name: pa.string() for name in ("key", *columns, *optional)}
        table = pacsv.read_csv(io.BytesIO(data), convert_options=pacsv.ConvertOptions(column_types=types))
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(io.BytesIO(data))
    missing = set(columns) - set(table.column_names)
    if missing:
        raise ValueError(f"manifest {url} lacks column(s) {sorted(missing)}; it has {table.column_names}, "
                         f"needs {', '.join(columns)} (URLs) and optionally key")
    for name in columns:
        if table[name].null_count:
            raise ValueError(f"manifest {url}: {table[name].null_count} empty value(s) in column {name!r}")
    base = posixpath.dirname(url.rstrip("/")) if storage.scheme_of(url) else os.path.dirname(os.path.abspath(url))
    urls = {name: [_absolute(u, base) for u in table[name].to_pylist()] for name in columns}
    for name in optional:
        if name in table.column_names:
            urls[name] = [_absolute(u, base) if u else "" for u in table[name].to_pylist()]
    keys = ([str(k) for k in table["key"].to_pylist()] if "key" in table.column_names
            else _derive_keys(urls[columns[0]]))
    return keys, urls


def read_manifest(url: str) -> pa.Table:
    """A pairs manifest -> table ``key``, ``image``, ``mask`` (see :func:`read_manifest_columns`); keys unique,
    every row with a mask (photos without masks train with ``--photos``)."""
    keys, urls = read_manifest_columns(url, ("image",), optional=("mask",))
    if "mask" not in urls:
        raise ValueError(f"manifest {url} has no mask column: a manifest of photos without masks trains with "
                         "--photos, pairs need a mask column")
    unmasked = sum(1 for m in urls["mask"] if not m)
    if unmasked:
        raise ValueError(f"manifest {url}: {unmasked} row(s) without a mask; photos without masks train with "
                         "--photos (a manifest of its own)")
    dupes = [k for k, c in Counter(keys).items() if c > 1]
    if dupes:
        raise ValueError(f"manifest {url}: {len(dupes)} duplicate key(s), e.g. {dupes[:3]}; keys must be unique")
    return pa.table({"key": keys, "image": urls["image"], "mask": urls["mask"]}, schema=PAIR_SCHEMA)


def load_pairs(images: str | None = None, masks: str | None = None, manifest: str | None = None,
               limit: int | None = None) -> pa.Table:
    """Pairs from two prefixes or a manifest (exactly one of the two) -> table ``key``, ``image``, ``mask``.

    ``limit`` keeps the first N pairs (sorted by key for prefixes, file order for manifests).
    Orphans of prefix pairing are logged; use :func:`pair_prefixes` to get them as lists.
    """
    if manifest is not None and (images is not None or masks is not None):
        raise ValueError("give either manifest or images + masks, not both")
    if manifest is not None:
        pairs = read_manifest(manifest)
    elif images is not None and masks is not None:
        pairs = pair_prefixes(images, masks).pairs
    else:
        raise ValueError("no data source: give images and masks (two prefixes) or manifest (a .parquet/.csv)")
    if limit is not None:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        pairs = pairs.slice(0, limit)
    return pairs


def load_train_only_pairs(urls: list[str]) -> pa.Table:
    """The manifests of ``--train-pairs`` (pairs that only train, e.g. pseudo-labels) -> one table ``key``,
    ``image``, ``mask``, each key prefixed by its source's number (``+1:img001``: unique beside the main pairs' keys,
    and a bad file's record names its source). ValueError naming the URL when it is not a manifest, is missing or
    holds no pair."""
    tables = []
    for number, url in enumerate(urls, 1):
        if not is_manifest(url):
            raise ValueError(f"--train-pairs {url}: not a manifest (.parquet or .csv); write one with `semcolor "
                             "manifest --images URL --masks URL --out URL`")
        try:
            table = read_manifest(url)
        except FileNotFoundError:
            raise ValueError(f"--train-pairs {url}: no such manifest") from None
        if table.num_rows == 0:
            raise ValueError(f"--train-pairs {url}: the manifest holds no pair")
        keys = pa.array([f"+{number}:{k}" for k in table["key"].to_pylist()], pa.string())
        tables.append(table.set_column(0, "key", keys))
    return pa.concat_tables(tables)


# ---------------------------------------------------------------- split


def is_validation(key: str, val_fraction: float, seed: int = 0) -> bool:
    """True when ``key`` falls in the validation share; stable across processes and runs (SHA-256)."""
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction must be in [0, 1], got {val_fraction}")
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < val_fraction


def split_pairs(pairs: pa.Table, val_fraction: float, seed: int = 0) -> tuple[pa.Table, pa.Table]:
    """Pairs -> (train, validation) by a hash of each key (see :func:`is_validation`)."""
    val = pa.array([is_validation(k, val_fraction, seed) for k in pairs["key"].to_pylist()], type=pa.bool_())
    return pairs.filter(pc.invert(val)), pairs.filter(val)


def split_for_training(pairs: pa.Table, val_fraction: float, train_only: list[str] | None = None, seed: int = 0
                       ) -> tuple[pa.Table, pa.Table, int]:
    """The main pairs split by :func:`split_pairs` (seed 0), plus the pairs of the ``train_only`` manifests
    (:func:`load_train_only_pairs`) added to the training side -> (train, validation, how many train-only pairs).
    The validation split is the main pairs' whatever ``train_only`` adds (`semcolor evaluate --val-fraction` sees
    the same). With train-only pairs the training side comes in an order drawn from ``seed``, so that a worker's
    local shuffle buffer mixes both kinds from the first batch (appended, they would come last in every pass)."""
    train, val = split_pairs(pairs, val_fraction, seed=0)
    if not train_only:
        return train, val, 0
    extra = load_train_only_pairs(train_only)
    train = pa.concat_tables([train, extra])
    order = np.random.default_rng(seed).permutation(train.num_rows)
    return train.take(pa.array(order)), val, extra.num_rows
