"""Pixels and bytes: LAB color, URLs and atomic writes, decoding with typed errors, deterministic encoding, and the
one inference core (:mod:`semcolor.core.colorizer`). Imports nothing else of semcolor."""
