"""`semcolor bench WHAT`: dispatch to semcolor.benchmarks.<what>.run(args); each prints a table and writes JSON."""

from __future__ import annotations

import argparse
import importlib


def run_bench(args: argparse.Namespace) -> int:
    module = importlib.import_module(f"semcolor.benchmarks.{args.what}")
    return int(module.run(args) or 0)
