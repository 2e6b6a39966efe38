"""Figures of ``leaf analyze`` (matplotlib, Agg backend, PNG files).

* ``attention_layers.png`` -- left: per layer, the mean share of the response
  tokens' prompt attention that lands on flagged spans, one bar per model
  (error bars: standard error over samples); right: the overall split of
  prompt attention into span / rest of instruction / template, per model.
* ``attention_heatmap_<n>.png`` -- for one sample, one panel per model: rows
  are layers, columns the instruction tokens, colour the attention the
  response tokens put on that token (mean over heads and response queries,
  renormalised over the prompt). Flagged tokens have red labels and a red
  bar under the panel.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any


def pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - only without matplotlib
        raise ImportError("figures need matplotlib: pip install 'leaf[analysis]' (or pass --plots false)") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _token_label(text: str) -> str:
    text = text.replace("\n", "\u23ce").replace("\t", "\u21e5")
    return text if text.strip() else repr(text)[1:-1] or "\u2423"


def draw_layers(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    import numpy as np

    models = [m for m in result["models"] if m["summary"]["samples"]]
    fig, (ax, ax2) = plt.subplots(
        1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, max(1, len(models))]}, constrained_layout=True
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
    ax2.set_xticks(range(len(models)), [m["label"] for m in models], rotation=20, fontsize=8)
    ax2.set_ylim(0, 1)
    ax2.set_title("Overall split (mean over layers)")
    ax2.legend(fontsize=8, loc="lower right")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw_heatmap(sample_id: Any, panels: list[tuple[str, dict[str, Any]]], path: Path) -> None:
    """``panels``: (model label, per-sample record with ``tokens``) pairs."""
    plt = pyplot()
    import numpy as np

    widest = max(len(rec["tokens"]) for _, rec in panels)
    fig_w = min(max(6.0, 0.22 * widest + 2), 40.0)
    heights = [max(1, len(rec["tokens"][0]["attention"])) for _, rec in panels]
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(fig_w, 1.2 + sum(0.35 * h + 1.1 for h in heights)),
        gridspec_kw={"height_ratios": [h + 3 for h in heights]},
        squeeze=False,
        constrained_layout=True,
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
        )
        if len(tokens) <= 120:
            ax.set_xticks(range(len(tokens)), [_token_label(t["text"]) for t in tokens], rotation=90, fontsize=7)
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
    fig.savefig(path, dpi=100)
    plt.close(fig)


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
