"""Drawing helpers shared by every figure of leaf (matplotlib, Agg backend).

One drawing path: ``leaf analyze`` writes its figures as PNG files and
``leaf report`` embeds its training curves as PNG data, both through
:func:`save`. Figures are saved with ``bbox_inches="tight"``, so the saved
image grows or shrinks to hold every title, tick label and legend: nothing
drawn is ever cut off at the figure's edge. Imports only matplotlib and numpy.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

PAD_INCHES = 0.08
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - only without matplotlib
        raise ImportError("figures need matplotlib: pip install matplotlib (or pass --plots false)") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure(width: float, height: float, **subplots: Any) -> tuple[Any, Any]:
    """``(fig, axes)`` of ``width`` x ``height`` inches with constrained layout (room made for labels)."""
    plt = pyplot()
    return plt.subplots(figsize=(width, height), layout="constrained", **subplots)


def save(fig: Any, target: str | Path | IO[bytes], *, dpi: float = 100, fmt: str = "png") -> None:
    """Write ``fig`` cropped to everything drawn (``bbox_inches="tight"``), then close it."""
    try:
        fig.savefig(target, format=fmt, dpi=dpi, bbox_inches="tight", pad_inches=PAD_INCHES)
    finally:
        pyplot().close(fig)


def to_bytes(fig: Any, *, dpi: float = 100, fmt: str = "png") -> bytes:
    """:func:`save` into memory."""
    buf = io.BytesIO()
    save(fig, buf, dpi=dpi, fmt=fmt)
    return buf.getvalue()


def token_label(text: str) -> str:
    """A tick label for a token: the full text, newlines and tabs shown as ⏎ and ⇥, blanks visible."""
    text = text.replace("\n", "\u23ce").replace("\t", "\u21e5")
    return text if text.strip() else repr(text)[1:-1] or "\u2423"


def text_inches(text: str, fontsize: float) -> float:
    """Rough length of ``text`` set in ``fontsize`` points (for sizing figures before drawing)."""
    return 0.62 * fontsize * len(text) / 72.0


def line_chart(
    series: dict[str, Sequence[tuple[float, float]]],
    *,
    title: str,
    x_label: str = "step",
    width: float = 6.4,
    height: float = 3.0,
) -> Any:
    """A figure with one line per series of (x, y) points, sorted by x; non-finite points are dropped.

    The legend sits outside the plot area, on the right.
    """
    fig, ax = figure(width, height)
    drawn = 0
    for k, (name, points) in enumerate(series.items()):
        clean = sorted(
            (float(x), float(y)) for x, y in points if math.isfinite(float(x)) and math.isfinite(float(y))
        )
        if not clean:
            continue
        xs, ys = zip(*clean)
        ax.plot(xs, ys, color=PALETTE[k % len(PALETTE)], lw=1.8, marker="o" if len(clean) == 1 else None,
                label=name)
        drawn += 1
    if drawn:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    else:
        ax.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(title, fontsize=11, loc="left")
    ax.set_xlabel(x_label)
    ax.grid(True, color="#e6e9ec", lw=0.8)
    ax.tick_params(labelsize=9)
    return fig
