"""The demo's summary figure: counterfactual against clean accuracy per arm, with error bars over seeds.

One panel for all families together and one per family. An arm up and to the
right learnt to ignore the planted text without forgetting how to solve the
problem; KD and re-weighting (``kd_selected``) are drawn as dashed lines so
each arm reads as above or below them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from leaf.figures import PALETTE, figure, save

_MARKERS = "osD^v<>PXh*"


def arms_figure(summary: dict[str, Any], path: Path) -> Path:
    """Draw ``summary`` (what :func:`leaf.demo.pipeline.summarise` returns for a v2 run) to ``path`` (PNG)."""
    families = list(summary["families"])
    panels: list[tuple[str, dict[str, Any]]] = [("all families", {a: v for a, v in summary["accuracy"].items()})]
    for f in families:
        panels.append((f, {a: {split: cells[f] for split, cells in by.items()} for a, by in summary["by_family"].items()}))
    arms = [a for a in summary["accuracy"] if a != "teacher"]
    fig, axes = figure(3.4 * len(panels), 3.6, ncols=len(panels), squeeze=False)
    for ax, (title, acc) in zip(axes[0], panels):
        for k, arm in enumerate(arms):
            cf, clean = acc[arm]["counterfactual"], acc[arm]["clean"]
            ax.errorbar(100 * clean["mean"], 100 * cf["mean"], xerr=100 * clean["std"], yerr=100 * cf["std"],
                        fmt=_MARKERS[k // len(PALETTE) % len(_MARKERS)], color=PALETTE[k % len(PALETTE)],
                        ms=5, capsize=2, lw=1, label=arm)
        for ref, style in (("kd", "--"), ("kd_selected", ":")):
            if ref in acc:
                ax.axhline(100 * acc[ref]["counterfactual"]["mean"], color="#555555", ls=style, lw=0.9)
        ax.set_title(title, fontsize=10, loc="left")
        ax.set_xlabel("clean accuracy (%)", fontsize=9)
        ax.grid(True, color="#e6e9ec", lw=0.8)
        ax.tick_params(labelsize=8)
    axes[0][0].set_ylabel("counterfactual accuracy (%)", fontsize=9)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 0.95), fontsize=8, frameon=False,
               title="arm (dashed: kd, dotted: kd_selected)", title_fontsize=8)
    save(fig, path, dpi=110)
    return path
