"""Benchmarks run by `semcolor bench WHAT`: each module has ``run(args) -> int``, prints a table and writes JSON."""
