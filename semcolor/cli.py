"""The `semcolor` command: one argparse tree for every subcommand, built from the options the configs declare.

Each subcommand's handler lives beside the capability it fronts and is imported lazily, so `semcolor --help`
stays fast; the job entrypoints in `jobs/` parse their argv with this same tree.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from semcolor import __version__
from semcolor.options import HelpFormatter, add_options


@dataclass(frozen=True)
class Command:
    """A subcommand: its help, the config classes whose options it takes, its handler ("module:function")."""

    help: str
    options: tuple[str, ...]
    """"module:Class" of each config class whose options the command offers."""
    handler: str
    ray: bool = True
    """Takes --address / --num-cpus (starts or joins Ray)."""


COMMANDS: dict[str, Command] = {
    "synth": Command("write synthetic image/mask pairs: DST/images/<key>.png, DST/masks/<key>.png",
                     ("semcolor.data.synth:SynthOptions",), "semcolor.data.synth:run_synth", ray=False),
    "manifest": Command("list and pair images with masks once, write a Parquet/CSV manifest",
                        ("semcolor.data.manifest:ManifestOptions",), "semcolor.data.manifest:run_manifest",
                        ray=False),
    "train": Command("train the dual-head network with Ray Train (data-parallel DDP)",
                     ("semcolor.train.config:TrainConfig",), "semcolor.train.driver:run_train"),
    "evaluate": Command("metrics.json and grid.png of a checkpoint on image/mask pairs, at full resolution",
                        ("semcolor.evaluation.config:EvaluateConfig",), "semcolor.evaluation.job:run_evaluate"),
    "colorize": Command("colorize an archive in bulk with Ray Data: full resolution, resumable",
                        ("semcolor.bulk.job:ColorizeConfig",), "semcolor.bulk.job:run_colorize"),
    "serve": Command("serve the model over HTTP with Ray Serve (a web page at /, the API at /docs)",
                     ("semcolor.serve.args:ServeArgs", "semcolor.serve.args:ServeCommand"),
                     "semcolor.serve.builder:run_serve"),
    "demo": Command("synthesize data, train briefly, colorize unseen scans and photos, write a contact sheet",
                    ("semcolor.demo.demo:DemoOptions",), "semcolor.demo.demo:run_demo"),
    "export": Command("export a checkpoint to ONNX (the model without Ray or torch), verified against torch first",
                      ("semcolor.model.export:ExportOptions",), "semcolor.model.export:run_export", ray=False),
    "report": Command("an HTML page of a colorize run from its records: signal distributions, errors, worst outputs",
                      ("semcolor.bulk.report:ReportOptions",), "semcolor.bulk.report:run_report", ray=False),
    "bench": Command("benchmarks: print a table, write JSON", ("semcolor.benchmarks:BenchOptions",),
                     "semcolor.benchmarks:run_bench"),
}


def _load(ref: str):
    module_name, name = ref.split(":")
    return getattr(importlib.import_module(module_name), name)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command tree; `jobs/*.py` parse their argv with this same parser.

    ``only``: give only this subcommand its options (the others keep their help line), so a command imports
    just the modules that declare its own options.
    """
    parser = argparse.ArgumentParser(
        prog="semcolor", formatter_class=HelpFormatter,
        description="Colorize grayscale scans and segment their foreground with one dual-head network, on Ray.",
    )
    parser.add_argument("--version", action="version", version=f"semcolor {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.help, formatter_class=HelpFormatter)
        if only is not None and name != only:
            continue
        for ref in command.options:
            add_options(p, _load(ref))
        if command.ray:
            add_options(p, _load("semcolor.ray_env:RayOptions"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `semcolor` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=command if command in COMMANDS else "")
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    handler = _load(COMMANDS[args.command].handler)
    try:
        return int(handler(args) or 0)
    except (ValueError, FileNotFoundError, PermissionError) as exc:  # bad input: one line that names it
        print(f"semcolor {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
