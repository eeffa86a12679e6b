"""`semcolor manifest`: list once (a bucket of millions of keys is slow to list), write a manifest that every
training and evaluation command reads instead: image/mask pairs, or photos without masks (empty mask column)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import pyarrow as pa

from semcolor.data.pairs import pair_prefixes, write_manifest
from semcolor.data.photos import list_photos
from semcolor.options import option


@dataclass(kw_only=True)
class ManifestOptions:
    """The options of `semcolor manifest`."""

    images: str = option(help="URL of the images prefix")
    masks: str | None = option(None, help="URL of the masks prefix, paired with --images by relative key; without "
                               "it, a manifest of photos without masks (empty mask column, for `train --photos`)")
    out: str = option(help="URL of the manifest to write (.parquet, or .csv)")


def run_manifest(args: argparse.Namespace) -> int:
    """`semcolor manifest --images URL [--masks URL] --out URL`: list (and pair) once, write the manifest."""
    if args.masks is None:
        photos = list_photos(args.images, what="--images")
        write_manifest(photos.append_column("mask", pa.array([""] * photos.num_rows, pa.string())), args.out)
        print(f"wrote {photos.num_rows} photos without masks to {args.out} (empty mask column)")
        return 0
    pairing = pair_prefixes(args.images, args.masks)
    if pairing.pairs.num_rows == 0:
        print(f"no pairs between {args.images} and {args.masks}; nothing written", file=sys.stderr)
        return 1
    write_manifest(pairing.pairs, args.out)
    print(f"wrote {pairing.pairs.num_rows} pairs to {args.out}; orphan images {len(pairing.orphan_images)}, "
          f"orphan masks {len(pairing.orphan_masks)}, ambiguous {len(pairing.ambiguous)}")
    return 0
