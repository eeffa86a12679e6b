"""Checks several test modules share (imported by name: pytest puts tests/ on the path)."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc

from semcolor.core.decode import OK


def ok_counts(records: pa.Table) -> dict[str, int]:
    """``{key: number of ok records}`` across all runs (exactly-once checks: every value should be 1)."""
    return dict(Counter(records.filter(pc.equal(records["status"], OK))["key"].to_pylist()))
