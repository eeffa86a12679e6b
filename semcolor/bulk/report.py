"""`semcolor report DST --out report.html`: what a bulk run produced, worst first, from its records alone.

Reads ``DST/_manifest/*.parquet`` (every run; the latest record per key, :func:`semcolor.bulk.records.latest_by_key`)
and writes one self-contained HTML page (images inline):

- counts: keys, ok, errors, sources that already had colour;
- the distribution of each quality signal of the ok outputs (:mod:`semcolor.bulk.signals`), and of megapixels and
  seconds per image;
- the error kinds with their counts and a few reasons each;
- contact sheets of outputs sampled from the tails (least confident masks, least colourful, largest masks) and
  from the middle (around the median colourfulness): only these outputs are read, as small thumbnails, so the
  page costs about the same for a thousand or a million records (reading and reducing 1 M records takes seconds:
  ``semcolor bench plan``'s ``report`` step).
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from semcolor.bulk.records import latest_by_key, read_records
from semcolor.core import storage
from semcolor.core.decode import OK
from semcolor.options import option

SIGNAL_PLOTS = (("colorfulness", "colourfulness of the prediction"), ("foreground_share", "foreground share of the mask"),
                ("mask_confidence", "mask confidence (mean max class probability)"),
                ("megapixels", "source megapixels"), ("seconds", "seconds per image"))
SAMPLES = (("least confident masks", "mask_confidence", "low"), ("least colourful", "colorfulness", "low"),
           ("largest masks", "foreground_share", "high"), ("the middle (median colourfulness)", "colorfulness", "mid"))
THUMB = 160
"""Thumbnail side in pixels."""


@dataclass(kw_only=True)
class ReportOptions:
    """The options of `semcolor report`."""

    dst: str = option(help="the DST of a `semcolor colorize` run (its _manifest/ records)", positional=True)
    out: str = option("report.html", help="where to write the HTML page (any storage URL)")
    samples: int = option(8, help="outputs shown per sampled group (tails and middle)")


def sample_rows(ok: pa.Table, column: str, where: str, n: int) -> pa.Table:
    """``n`` ok records from a tail (``low`` / ``high`` values of ``column``, the most extreme first) or around the
    median (``mid``); rows whose signal is null are left out."""
    values = ok[column].to_numpy(zero_copy_only=False).astype(np.float64)
    index = np.flatnonzero(np.isfinite(values))
    if not len(index) or n <= 0:
        return ok.slice(0, 0)
    v = values[index]
    if where == "mid":
        order = np.argsort(np.abs(v - np.median(v)), kind="stable")
    else:
        order = np.argsort(v if where == "low" else -v, kind="stable")
    return ok.take(pa.array(index[order[:n]], pa.int64()))


def _thumbnail(url: str | None, side: int = THUMB) -> tuple[str | None, str]:
    """An output's (or mask's) thumbnail as a data: URL (JPEG), or (None, why not)."""
    from PIL import Image

    if not url:
        return None, "no output"
    try:
        with Image.open(io.BytesIO(storage.read_bytes(url))) as im:
            im.draft("RGB", (side, side))
            im = im.convert("RGB")
            im.thumbnail((side, side))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=85)
    except Exception as exc:  # a missing or unreadable output shows its reason in its tile
        return None, f"{type(exc).__name__}: {exc}"[:120]
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), ""


def _histograms(ok: pa.Table) -> str:
    """The signals' distributions as one PNG (data: URL)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from semcolor.core.figures import figure_png

    fig, axes = plt.subplots(1, len(SIGNAL_PLOTS), figsize=(3.2 * len(SIGNAL_PLOTS), 2.6))
    for ax, (column, title) in zip(axes, SIGNAL_PLOTS):
        values = ok[column].to_numpy(zero_copy_only=False).astype(np.float64)
        values = values[np.isfinite(values)]
        if len(values):
            ax.hist(values, bins=40, color="#4a7ab5")
            ax.axvline(float(np.median(values)), color="#c0392b", lw=1)
        ax.set_title(f"{title}\n(n {len(values):,}, median {np.median(values) if len(values) else float('nan'):.3g})",
                     fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return "data:image/png;base64," + base64.b64encode(figure_png(fig, dpi=80)).decode("ascii")


def _tile(row: dict[str, Any], column: str, thumb: tuple[str | None, str], mask: tuple[str | None, str]) -> str:
    src, why = thumb
    image = (f'<img src="{src}" alt="{html.escape(row["key"])}">' if src
             else f'<div class="missing">{html.escape(why)}</div>')
    if mask[0]:
        image += f'<img class="mask" src="{mask[0]}" alt="mask of {html.escape(row["key"])}">'

    facts = (f'{column} {row[column]:.3f}<br>colourfulness {row["colorfulness"]:.1f}, mask '
             f'{row["foreground_share"]:.0%} at {row["mask_confidence"]:.2f}'
             if row["mask_confidence"] is not None else f'{column} {row[column]:.3f}')
    return (f'<figure>{image}<figcaption><b>{html.escape(row["key"])}</b><br>{facts}</figcaption></figure>')


def build_report(records: pa.Table, samples: int = 8, threads: int = 16) -> tuple[str, dict[str, Any]]:
    """Records (any runs) -> (the HTML page, its figures: counts, error kinds, the sampled keys per group)."""
    latest = latest_by_key(records)
    ok = latest.filter(pc.equal(latest["status"], OK))
    errors = latest.filter(pc.not_equal(latest["status"], OK))
    pixels = pc.multiply(pc.cast(ok["width"], pa.float64()), pc.cast(ok["height"], pa.float64()))
    ok = ok.append_column("megapixels", pc.divide(pixels, 1e6))
    kinds = Counter(errors["kind"].to_pylist())
    reasons: dict[str, list[str]] = {}
    for kind, reason, key in zip(*(errors[c].to_pylist() for c in ("kind", "reason", "key"))):
        if len(reasons.setdefault(kind, [])) < 3:
            reasons[kind].append(f"{key}: {reason}")
    groups = [(title, column, sample_rows(ok, column, where, samples)) for title, column, where in SAMPLES]
    sampled = [row for _, _, rows in groups for row in rows.to_pylist()]
    wanted = [row["output"] for row in sampled] + [row["mask"] for row in sampled if row["mask"]]
    with ThreadPoolExecutor(max_workers=threads) as pool:  # only the sampled outputs (and their masks) are read
        thumbs = dict(zip(wanted, pool.map(_thumbnail, wanted)))
    colored = int(pc.sum(pc.cast(ok["source_color"], pa.int64())).as_py() or 0)
    figures = {"keys": latest.num_rows, "ok": ok.num_rows, "errors": errors.num_rows, "source_color": colored,
               "error_kinds": dict(kinds.most_common()),
               "sampled": {title: rows["key"].to_pylist() for title, _, rows in groups}}
    sections = [
        f"<h1>semcolor report</h1><p>{latest.num_rows:,} keys: <b>{ok.num_rows:,} ok</b>, "
        f"<b>{errors.num_rows:,} errors</b>; {colored:,} ok sources already had colour "
        "(their colours were replaced by predicted ones).</p>",
        f'<h2>Quality signals of the ok outputs</h2><img class="plots" src="{_histograms(ok)}" alt="histograms">',
        "<h2>Errors by kind</h2>" + ("<table><tr><th>kind</th><th>count</th><th>for example</th></tr>" + "".join(
            f"<tr><td>{html.escape(k)}</td><td>{n:,}</td><td>{'<br>'.join(html.escape(r) for r in reasons[k])}</td>"
            "</tr>" for k, n in kinds.most_common()) + "</table>" if kinds else "<p>none</p>"),
    ]
    for title, column, rows in groups:
        tiles = "".join(_tile(row, column, thumbs[row["output"]], thumbs.get(row["mask"], (None, "")))
                        for row in rows.to_pylist())
        sections.append(f'<h2>{html.escape(title)}</h2><div class="sheet">{tiles or "<p>no ok output</p>"}</div>')
    style = ("body{font-family:sans-serif;margin:1.5em;max-width:1400px}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;vertical-align:top}"
             ".sheet{display:flex;flex-wrap:wrap;gap:8px}figure{margin:0;width:" + str(THUMB) + "px;font-size:11px}"
             ".missing{width:" + str(THUMB) + "px;height:" + str(THUMB * 3 // 4) + "px;background:#eee;font-size:11px;"
             "overflow:hidden}.plots{max-width:100%}.mask{width:" + str(THUMB // 2) + "px;display:block}")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>semcolor report</title><style>{style}</style>"
            f"</head><body>{''.join(sections)}</body></html>")
    return page, figures


def run_report(args: argparse.Namespace) -> int:
    """`semcolor report DST --out report.html`: one line with the counts and where the page is."""
    started = time.perf_counter()
    records = read_records(args.dst)
    if records.num_rows == 0:
        raise ValueError(f"{args.dst}: no records under _manifest/ (is it the DST of a `semcolor colorize` run?)")
    if args.samples < 0:
        raise ValueError(f"--samples must be >= 0; got {args.samples}")
    page, figures = build_report(records, args.samples)
    storage.write_text(args.out, page)
    print(f"semcolor report: {figures['keys']:,} keys, {figures['ok']:,} ok, {figures['errors']:,} errors "
          f"{figures['error_kinds']}; {args.out} in {time.perf_counter() - started:.1f} s")
    return 0
