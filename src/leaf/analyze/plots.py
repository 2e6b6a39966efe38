"""Figures of ``leaf analyze`` (PNG files, drawn through :mod:`leaf.figures`).

* ``attention_layers.png`` -- left: per layer, the mean share of the response
  tokens' prompt attention that lands on flagged spans, one bar per model
  (error bars: standard error over samples); right: the overall split of
  prompt attention into span / rest of instruction / template, per model.
* ``attention_heatmap_<n>.png`` -- for one sample, one panel per model: rows
  are layers, columns the instruction tokens, colour the attention the
  response tokens put on that token (mean over heads and response queries,
  renormalised over the prompt). Flagged tokens have red labels and a red
  bar under the panel.

Each figure has a ``*_figure`` function that returns the matplotlib figure
(for tests and for embedding) and a ``draw_*`` function that saves it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from leaf.figures import pyplot, save, text_inches, token_label

__all__ = ["draw_all", "draw_heatmap", "draw_layers", "heatmap_figure", "layers_figure", "pyplot"]

TOKEN_FONT = 7  # points, the token tick labels of a heatmap
MAX_LABELLED = 120  # more tokens than this: no token labels (they would overlap)


def layers_figure(result: dict[str, Any]) -> Any:
    import numpy as np

    models = [m for m in result["models"] if m["summary"]["samples"]]
    label_room = max((text_inches(m["label"], 8) for m in models), default=0.0) * 0.35  # sin(20 degrees)
    fig, (ax, ax2) = pyplot().subplots(
        1, 2, figsize=(11, 4 + label_room), gridspec_kw={"width_ratios": [3, max(1, len(models))]},
        layout="constrained",
    )
    width = 0.8 / max(1, len(models))
    for k, m in enumerate(models):
        values = [v if v is not None else 0.0 for v in m["summary"]["per_layer"]["share_on_span"]]
        errors = [e if e is not None else 0.0 for e in m["summary"]["per_layer_stderr"]["share_on_span"]]
        x = np.arange(len(values)) + (k - (len(models) - 1) / 2) * width
        ax.bar(x, values, width, yerr=errors, capsize=2, label=f"{m['label']} (n={m['summary']['samples']})")
    ax.set_xlabel("layer")
    ax.set_ylabel("share of prompt attention on flagged spans")
    ax.set_title("Response-token attention on flagged spans, per layer")
    if models:
        ax.legend(fontsize=8)
        ax.set_xticks(range(max(m["num_layers"] for m in models)))
    bottom = np.zeros(len(models))
    for key, colour in (("share_on_span", "#d62728"), ("share_on_rest", "#1f77b4"), ("share_on_template", "#bbbbbb")):
        values = np.array([m["summary"][key] or 0.0 for m in models])
        ax2.bar(range(len(models)), values, bottom=bottom, color=colour, label=key.replace("share_on_", ""))
        bottom += values
    ax2.set_xticks(range(len(models)), [m["label"] for m in models], rotation=20, ha="right", fontsize=8)
    ax2.set_ylim(0, 1)
    ax2.set_title("Overall split (mean over layers)")
    ax2.legend(fontsize=8, loc="lower right")
    return fig


def heatmap_figure(sample_id: Any, panels: list[tuple[str, dict[str, Any]]]) -> Any:
    """``panels``: (model label, per-sample record with ``tokens``) pairs; one panel each."""
    import numpy as np

    widest = max(len(rec["tokens"]) for _, rec in panels)
    fig_w = min(max(6.0, 0.22 * widest + 2), 40.0)
    layers = [max(1, len(rec["tokens"][0]["attention"])) for _, rec in panels]
    # Room under each panel for its token labels (rotated 90 degrees: as tall as the longest is long).
    rooms = [
        text_inches(max((token_label(t["text"]) for t in rec["tokens"]), key=len), TOKEN_FONT) + 0.15
        if len(rec["tokens"]) <= MAX_LABELLED else 0.4
        for _, rec in panels
    ]
    fig, axes = pyplot().subplots(
        len(panels),
        1,
        figsize=(fig_w, 0.3 + sum(0.3 * h + 0.6 + r for h, r in zip(layers, rooms))),
        gridspec_kw={"height_ratios": [0.3 * h + 0.6 + r for h, r in zip(layers, rooms)]},
        squeeze=False,
        layout="constrained",
    )
    for ax, (label, rec) in zip(axes[:, 0], panels):
        tokens = rec["tokens"]
        grid = np.array([t["attention"] for t in tokens]).T  # [layers, tokens]
        im = ax.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set_yticks(range(grid.shape[0]))
        ax.set_ylabel("layer")
        ax.set_title(
            f"{label}: sample {sample_id} -- share on spans {rec['share_on_span']:.3f} "
            f"({rec['n_span_tokens']}/{rec['n_span_tokens'] + rec['n_rest_tokens']} instruction tokens flagged)",
            fontsize=9,
            loc="left",
        )
        if len(tokens) <= MAX_LABELLED:
            ax.set_xticks(range(len(tokens)), [token_label(t["text"]) for t in tokens], rotation=90,
                          fontsize=TOKEN_FONT)
            for tick, t in zip(ax.get_xticklabels(), tokens):
                if t["span"]:
                    tick.set_color("#d62728")
                    tick.set_fontweight("bold")
        else:
            ax.set_xlabel("instruction token")
        for j, t in enumerate(tokens):
            if t["span"]:
                ax.plot([j - 0.5, j + 0.5], [grid.shape[0] - 0.45] * 2, color="#d62728", lw=4, clip_on=False)
        fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01, label="attention")
    return fig


def draw_layers(result: dict[str, Any], path: Path) -> None:
    save(layers_figure(result), path, dpi=110)


def draw_heatmap(sample_id: Any, panels: list[tuple[str, dict[str, Any]]], path: Path) -> None:
    save(heatmap_figure(sample_id, panels), path, dpi=100)


def _slug(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(value))[:60] or "sample"


def draw_all(result: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Draw every figure into ``out_dir``; return ``{"layers": name, "heatmaps": [names]}``."""
    out_dir = Path(out_dir)
    figures: dict[str, Any] = {"layers": None, "heatmaps": []}
    if any(m["summary"]["samples"] for m in result["models"]):
        draw_layers(result, out_dir / "attention_layers.png")
        figures["layers"] = "attention_layers.png"
    ids: list[Any] = []
    for m in result["models"]:
        for rec in m["samples"]:
            if "tokens" in rec and rec["id"] not in ids:
                ids.append(rec["id"])
    for n, sid in enumerate(ids):
        panels = [
            (m["label"], rec)
            for m in result["models"]
            for rec in m["samples"]
            if rec["id"] == sid and "tokens" in rec
        ]
        name = f"attention_heatmap_{n}_{_slug(sid)}.png"
        draw_heatmap(sid, panels, out_dir / name)
        figures["heatmaps"].append(name)
    return figures
