"""Training curves as a PNG: losses, validation mIoU, and PSNR of the model beside the gray baseline, per epoch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from semcolor.core.figures import figure_png


def _series(history: Sequence[dict[str, Any]], key: str) -> np.ndarray:
    return np.array([np.nan if h.get(key) is None else float(h[key]) for h in history], dtype=np.float64)


def plot_curves(history: Sequence[dict[str, Any]], title: str = "") -> bytes:
    """PNG bytes of three panels over ``epoch``: train/val losses (total, seg, color), val mIoU, val PSNR (model
    and gray baseline). ``history``: one metrics dict per epoch as reported by the training loop."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        raise ValueError("no epochs in history; nothing to plot")
    epochs = _series(history, "epoch")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    for key, style in (("train_loss", "-"), ("val_loss", "-"), ("train_seg_loss", "--"), ("val_seg_loss", "--"),
                       ("train_color_loss", ":"), ("val_color_loss", ":")):
        ax.plot(epochs, _series(history, key), style, marker="o", ms=3, label=key)
    ax.set_title("losses")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax = axes[1]
    ax.plot(epochs, _series(history, "val_miou"), marker="o", ms=3, label="val mIoU")
    ax.plot(epochs, _series(history, "val_pixel_accuracy"), marker="o", ms=3, label="val pixel accuracy")
    ax.set_title("segmentation")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    ax = axes[2]
    ax.plot(epochs, _series(history, "val_psnr"), marker="o", ms=3, label="model")
    ax.plot(epochs, _series(history, "val_gray_psnr"), "--", label="gray baseline (AB = 0)")
    ax.set_title("val PSNR, dB (L truth + predicted AB)")
    ax.legend(fontsize=7)
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    return figure_png(fig, dpi=90)
