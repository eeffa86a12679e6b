"""Matplotlib figures as PNG bytes (the caller writes them through semcolor.core.storage)."""

from __future__ import annotations

import io
from typing import Any


def figure_png(fig: Any, dpi: int) -> bytes:
    """Lay out a matplotlib figure, render it to PNG bytes and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()
