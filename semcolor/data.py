"""Training pairs: pairing images with masks, manifests, the Ray Data read pipeline, splits, preprocessing.

Pairs are a :class:`pyarrow.Table` with string columns ``key``, ``image``, ``mask`` (URLs), from either
two prefixes (``IMAGES/<key>.<ext>`` + ``MASKS/<key>.<ext>``, nested folders allowed) or a manifest
(Parquet or CSV with columns ``image``, ``mask`` and optionally ``key``): see :func:`load_pairs`.

The Ray Data pipeline (:func:`pairs_dataset`, :func:`load_dataset`) yields compact rows
``key`` str, ``rgb`` uint8 (S, S, 3), ``mask`` uint8 (S, S); LAB conversion and augmentation run
afterwards in torch on the consumer's device (:func:`preprocess_batch`).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import logging
import os
import posixpath
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import Tensor

from semcolor import color, storage
from semcolor.decode import DEFAULT_MAX_PIXELS, decode_batch

if TYPE_CHECKING:
    import ray.data

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"})
"""File extensions listed as images or masks (case-insensitive)."""

IGNORE_INDEX: int = 255
"""Mask value (and target value) of pixels that no loss or metric counts, with n_classes > 2."""

PAIR_SCHEMA = pa.schema([("key", pa.string()), ("image", pa.string()), ("mask", pa.string())])
STATUS_COLUMNS = ["ok", "error_kind", "error", "mask_resized"]


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


def read_manifest(url: str) -> pa.Table:
    """A manifest (Parquet, or CSV when ``url`` ends in ``.csv``) -> pairs table ``key``, ``image``, ``mask``.

    Relative entries are resolved against the manifest's folder; a missing ``key`` column is derived
    from the image paths under their common folder.
    """
    data = storage.read_bytes(url)
    if url.lower().endswith(".csv"):
        import pyarrow.csv as pacsv

        table = pacsv.read_csv(io.BytesIO(data), convert_options=pacsv.ConvertOptions(
            column_types={"key": pa.string(), "image": pa.string(), "mask": pa.string()}))
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(io.BytesIO(data))
    missing = {"image", "mask"} - set(table.column_names)
    if missing:
        raise ValueError(f"manifest {url} lacks column(s) {sorted(missing)}; it has {table.column_names}, "
                         "needs image, mask (URLs) and optionally key")
    for name in ("image", "mask"):
        if table[name].null_count:
            raise ValueError(f"manifest {url}: {table[name].null_count} empty value(s) in column {name!r}")
    base = posixpath.dirname(url.rstrip("/")) if storage.scheme_of(url) else os.path.dirname(os.path.abspath(url))
    images = [_absolute(u, base) for u in table["image"].to_pylist()]
    masks = [_absolute(u, base) for u in table["mask"].to_pylist()]
    keys = table["key"].to_pylist() if "key" in table.column_names else _derive_keys(images)
    dupes = [k for k, c in Counter(keys).items() if c > 1]
    if dupes:
        raise ValueError(f"manifest {url}: {len(dupes)} duplicate key(s), e.g. {dupes[:3]}; keys must be unique")
    return pa.table({"key": keys, "image": images, "mask": masks}, schema=PAIR_SCHEMA)


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


def run_manifest(args: argparse.Namespace) -> int:
    """`semcolor manifest --images URL --masks URL --out URL`: list, pair, write the manifest once."""
    pairing = pair_prefixes(args.images, args.masks)
    if pairing.pairs.num_rows == 0:
        print(f"no pairs between {args.images} and {args.masks}; nothing written", file=sys.stderr)
        return 1
    write_manifest(pairing.pairs, args.out)
    print(f"wrote {pairing.pairs.num_rows} pairs to {args.out}; orphan images {len(pairing.orphan_images)}, "
          f"orphan masks {len(pairing.orphan_masks)}, ambiguous {len(pairing.ambiguous)}")
    return 0


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


# ---------------------------------------------------------------- Ray Data pipeline


def _s3_options(pairs: pa.Table) -> storage.S3Options | None:
    """The driver's S3 settings when any pair is on s3://, for workers started before they were set."""
    urls = pc.utf8_lower(pa.concat_arrays([pairs["image"].combine_chunks(), pairs["mask"].combine_chunks()]))
    return storage.S3Options.from_env() if pc.any(pc.starts_with(urls, "s3")).as_py() else None


def pairs_dataset(pairs: pa.Table, size: int, max_pixels: int = DEFAULT_MAX_PIXELS,
                  rows_per_block: int = 32) -> "ray.data.Dataset":
    """A lazy Ray dataset decoding every pair; one row per pair, bad pairs included and marked.

    Columns: ``key``, ``rgb`` uint8 (size, size, 3), ``mask`` uint8 (size, size), and the status columns
    ``ok``, ``error_kind``, ``error``, ``mask_resized`` (see :func:`semcolor.decode.decode_batch`).
    Use :func:`load_dataset` to get good rows and an error report; a streaming consumer can instead
    keep the status columns, record rows with ``ok == False`` and train on the rest.
    Ray tasks read through :mod:`semcolor.storage`; for s3:// pairs the driver's S3 settings
    (:meth:`semcolor.storage.S3Options.from_env`: endpoint, region, static credentials if set) travel
    with the tasks, so workers reach the same endpoint with the same credentials.
    """
    import ray

    if size <= 0 or rows_per_block <= 0:
        raise ValueError(f"size and rows_per_block must be positive, got {size}, {rows_per_block}")
    if pairs.num_rows == 0:
        raise ValueError("no pairs to read; check the images/masks prefixes or the manifest (see pair_prefixes)")
    pairs = pairs.select(["key", "image", "mask"])
    blocks = [pairs.slice(i, rows_per_block) for i in range(0, pairs.num_rows, rows_per_block)]
    return ray.data.from_arrow(blocks).map_batches(
        decode_batch,
        batch_size=rows_per_block,
        batch_format="numpy",
        fn_kwargs={"size": size, "max_pixels": max_pixels, "s3": _s3_options(pairs)},
        udf_modifying_row_count=False,
    )


@dataclass
class LoadReport:
    """What :func:`load_dataset` did: good row count, recorded errors, masks resized to their image."""

    rows: int
    errors: list[dict[str, str]]
    """One record per skipped pair: ``key``, ``image``, ``mask`` (URLs), ``kind``, ``reason``."""
    mask_resized: int

    def counts(self) -> dict[str, int]:
        """``{"ok": rows, "mask_resized": n, "error": n, "error:<kind>": n ...}``."""
        kinds = Counter(e["kind"] for e in self.errors)
        return {"ok": self.rows, "mask_resized": self.mask_resized, "error": len(self.errors),
                **{f"error:{k}": v for k, v in sorted(kinds.items())}}


def load_dataset(pairs: pa.Table, size: int, max_pixels: int = DEFAULT_MAX_PIXELS,
                 rows_per_block: int = 32) -> tuple["ray.data.Dataset", LoadReport]:
    """Decode all pairs once (materialized in the object store) -> (good rows, report).

    The dataset holds only good rows, columns ``key``, ``rgb`` uint8 (S, S, 3), ``mask`` uint8 (S, S).
    Bad pairs (unreadable, empty, not an image, corrupt, over ``max_pixels``, bad mask) are in
    ``report.errors`` with key and reason and are logged; nothing raises for bad data.
    """
    import ray
    from ray.data.expressions import col

    ds = pairs_dataset(pairs, size, max_pixels, rows_per_block).materialize()
    table = pa.concat_tables(ray.get(ds.select_columns(["key", *STATUS_COLUMNS]).to_arrow_refs()))
    urls = {k: (i, m) for k, i, m in zip(*(pairs[c].to_pylist() for c in ("key", "image", "mask")))}
    bad = table.filter(pc.invert(table["ok"]))
    errors = [{"key": k, "image": urls[k][0], "mask": urls[k][1], "kind": kind, "reason": reason}
              for k, kind, reason in zip(*(bad[c].to_pylist() for c in ("key", "error_kind", "error")))]
    report = LoadReport(rows=table.num_rows - bad.num_rows, errors=errors,
                        mask_resized=int(pc.sum(table["mask_resized"]).as_py() or 0))
    for e in errors[:10]:
        log.warning("skipped %s (%s): %s", e["key"], e["kind"], e["reason"])
    if errors:
        log.warning("skipped %d of %d pairs: %s", len(errors), table.num_rows, report.counts())
    good = ds.filter(expr=col("ok")).drop_columns(STATUS_COLUMNS)
    return good, report


# ---------------------------------------------------------------- torch preprocessing


def _crop(x: Tensor, tops: Tensor, lefts: Tensor, crop: int) -> Tensor:
    """Per-sample crop of (B, H, W, ...) at (tops[i], lefts[i]) -> (B, crop, crop, ...)."""
    return torch.stack([x[i, t:t + crop, l:l + crop] for i, (t, l) in enumerate(zip(tops.tolist(), lefts.tolist()))])


def preprocess_batch(rgb: Tensor, mask: Tensor, n_classes: int, train: bool, crop: int | None = None,
                     generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """uint8 batches -> model tensors, on the inputs' device.

    In: ``rgb`` uint8 (B, H, W, 3); ``mask`` uint8 (B, H, W).
    Out: ``l`` float (B, 1, H', W') = L / 100 in [0, 1]; ``ab`` float (B, 2, H', W') = ab / 110
    (see :mod:`semcolor.color`); ``target`` int64 (B, H', W'): with n_classes == 2, 1 where mask > 127
    else 0; with n_classes > 2, the mask value (class id), :data:`IGNORE_INDEX` (255) kept as ignore.
    ``train``: each sample is flipped horizontally with probability 1/2 and, with ``crop``, cropped at a
    random place (image and mask alike); otherwise ``crop`` takes the centre. H' = W' = crop, or H, W.
    """
    if rgb.dtype != torch.uint8 or rgb.ndim != 4 or rgb.shape[-1] != 3:
        raise ValueError(f"rgb must be uint8 (B, H, W, 3); got {rgb.dtype} {tuple(rgb.shape)}")
    if mask.dtype != torch.uint8 or tuple(mask.shape) != tuple(rgb.shape[:3]):
        raise ValueError(f"mask must be uint8 (B, H, W) = {tuple(rgb.shape[:3])}; got {mask.dtype} {tuple(mask.shape)}")
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes}")
    batch, height, width = mask.shape
    gen_device = generator.device if generator is not None else torch.device("cpu")
    if train:
        flip = (torch.rand(batch, generator=generator, device=gen_device) < 0.5).to(rgb.device)
        rgb = torch.where(flip.view(-1, 1, 1, 1), rgb.flip(2), rgb)
        mask = torch.where(flip.view(-1, 1, 1), mask.flip(2), mask)
    if crop is not None:
        if not 0 < crop <= min(height, width):
            raise ValueError(f"crop must be in 1..{min(height, width)} for {height}x{width} inputs, got {crop}")
        if train:
            tops = torch.randint(0, height - crop + 1, (batch,), generator=generator, device=gen_device)
            lefts = torch.randint(0, width - crop + 1, (batch,), generator=generator, device=gen_device)
        else:
            tops = torch.full((batch,), (height - crop) // 2)
            lefts = torch.full((batch,), (width - crop) // 2)
        rgb, mask = _crop(rgb, tops, lefts, crop), _crop(mask, tops, lefts, crop)
    lab = color.rgb_to_lab(rgb.permute(0, 3, 1, 2).float() / 255.0)
    lightness, ab = color.split_lab(lab)
    if n_classes == 2:
        target = (mask > 127).long()
    else:
        target = mask.long()
        invalid = (target >= n_classes) & (target != IGNORE_INDEX)
        if bool(invalid.any()):
            bad = sorted(set(target[invalid].unique().tolist()))
            raise ValueError(f"mask values {bad[:10]} are neither class ids 0..{n_classes - 1} nor {IGNORE_INDEX} (ignore)")
    return {"l": color.l_to_model(lightness), "ab": color.ab_to_model(ab), "target": target}
