"""One self-contained HTML page of a run, rendered from the jinja2 templates in ``templates/``.

Python builds plain view models (dicts of strings and numbers) from a
:class:`~leaf.report.load.RunData`; the templates lay them out. The
environment escapes every value (``autoescape=True``), so text from the run is
never markup. CSS and JavaScript are included inline and every figure is a PNG
``data:`` URI, so the page loads nothing from outside the file.
"""

from __future__ import annotations

import base64
import datetime as _dt
import functools
import json
import math
from pathlib import Path
import struct
from collections.abc import Callable
from typing import Any

import jinja2
from markupsafe import Markup

from leaf.data.detections import Detection
from leaf.report.load import RunData, TrainingRun
from leaf.report.stats import counterfactual_stats, detection_stats, evaluation_table, minmax

# Colour of each saliency row (RGB); intensity = value in [0, 1].
COLOURS = {"teacher": (31, 119, 180), "student": (255, 127, 14), "d": (214, 39, 40)}
ROW_LABELS = {
    "teacher": Markup("teacher ĝ<sup>T</sup>"),
    "student": Markup("student ĝ<sup>S</sup>"),
    "d": Markup("1 − d"),
}
SECTIONS = (
    ("detections", "Detections", "Detections"),
    ("counterfactuals", "Counterfactual samples", "Counterfactuals"),
    ("training", "Training", "Training"),
    ("evaluation", "Evaluation", "Evaluation"),
    ("attention", "Attention on flagged spans", "Attention"),
)
FOLD_ROWS = 10  # a table with more rows (or layer columns) than this is folded into <details>
CHART_DPI = 120  # a little sharper than a plain screen, ~35 KB a chart; shown at its size (96 CSS px an inch)


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The templates shipped in ``leaf/report/templates``; every ``{{ value }}`` is HTML-escaped."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("leaf.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = fmt_num
    env.globals["FOLD_ROWS"] = FOLD_ROWS
    return env


def render(template: str, **context: Any) -> Markup:
    return Markup(environment().get_template(template).render(**context))


def fmt_num(value: Any, digits: int = 3) -> str:
    """A number for a table cell: floats to ``digits`` places, missing or non-finite as "–"."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _as_float(value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return 0.0
    return v if math.isfinite(v) else 0.0


def png_image(data: bytes, dpi: float | None = None) -> dict[str, Any]:
    """``src`` (a data URI) and, for a figure drawn at ``dpi``, the CSS ``width`` that shows it at its size."""
    image: dict[str, Any] = {"src": "data:image/png;base64," + base64.b64encode(data).decode("ascii"), "width": None}
    if dpi and data[12:16] == b"IHDR":
        image["width"] = round(struct.unpack(">I", data[16:20])[0] * 96 / dpi)
    return image


# --- detections ----------------------------------------------------------------------------------


def sample_view(record: Detection, instruction: str | None) -> dict[str, Any]:
    """One detection record, ready to show: its instruction three times, tokens coloured by ĝ^T, ĝ^S and 1 − d.

    The one place that reads a detection record's tokens and spans for display.
    Each row is a list of pieces: ``{"text"}`` for the text between tokens, plus
    ``cls``, ``style`` and ``title`` for a token.
    """
    tokens = sorted(record.tokens_of("instruction"), key=lambda t: t.start)
    spans = record.spans
    values = {
        "teacher": minmax([_as_float(t.g_teacher) for t in tokens]),
        "student": minmax([_as_float(t.g_student) for t in tokens]),
        "d": [1.0 - _as_float(t.score) for t in tokens],
    }
    truncated = record.truncated
    rows = []
    for mode in ("teacher", "student", "d"):
        pieces: list[dict[str, str]] = []
        last = truncated
        r, g, b = COLOURS[mode]
        for tok, value in zip(tokens, values[mode]):
            start, end = tok.start, tok.end
            if start > last:  # the text between tokens (whitespace, usually)
                pieces.append({"text": instruction[last:start] if instruction is not None else " "})
            in_span = any(start < e and end > s for s, e in spans)
            pieces.append({
                "text": instruction[start:end] if instruction is not None else tok.text,
                "cls": "tok" + (" flag" if tok.flag else "") + (" in-span" if in_span else ""),
                "style": f"background:rgba({r},{g},{b},{max(0.0, min(1.0, value)):.3f})",
                "title": (
                    f"g_teacher={fmt_num(tok.g_teacher, 4)} g_student={fmt_num(tok.g_student, 4)} "
                    f"d={fmt_num(tok.score, 4)}" + (" flagged" if tok.flag else "")
                ),
            })
            last = max(last, end)
        if instruction is not None and last < len(instruction):
            pieces.append({"text": instruction[last:]})
        rows.append({"mode": mode, "label": ROW_LABELS[mode], "pieces": pieces})
    return {
        "id": str(record.id),
        "method": record.method,
        "tokens": len(tokens),
        "flagged": sum(1 for t in tokens if t.flag),
        "spans": len(spans),
        "loss_teacher": record.loss_teacher,
        "loss_student": record.loss_student,
        "truncated": truncated,
        "rows": rows,
    }


def detections_view(run: RunData, shown: int, top: int) -> dict[str, Any]:
    recs = run.records("detections")
    st = detection_stats(recs, run.instructions, top=top)
    settings = (run.detections_meta or {}).get("settings") if isinstance(run.detections_meta, dict) else None
    chosen = ([r for r in recs if r.spans] + [r for r in recs if not r.spans])[:shown]
    return {
        "stats": st,
        "pairs": [
            ("samples", st["samples"]),
            ("methods", ", ".join(f"{k}: {v}" for k, v in st["methods"].items())),
            ("tokens analysed", st["tokens"]),
            ("flagged tokens", st["flagged_tokens"]),
            ("flagged tokens (%)", st["flagged_percent"]),
            ("spans", st["spans"]),
            ("samples with ≥ 1 span", st["samples_with_spans"]),
            ("spans per sample (mean)", st["spans_per_sample_mean"]),
            ("spans per sample (median)", st["spans_per_sample_median"]),
            ("spans per sample (max)", st["spans_per_sample_max"]),
            ("span length, characters (mean)", st["span_chars_mean"]),
            ("samples with truncated instruction", st["truncated_samples"]),
            ("teacher loss (mean)", st["loss_teacher_mean"]),
            ("student loss (mean)", st["loss_student_mean"]),
        ],
        "settings": json.dumps(settings, indent=1, ensure_ascii=False) if settings else None,
        "legend": [(m, f"rgb{COLOURS[m]}", ROW_LABELS[m]) for m in ("teacher", "student", "d")],
        "total": len(recs),
        "samples": [sample_view(r, run.instructions.get(str(r.id))) for r in chosen],
        "spaces_only": any(str(r.id) not in run.instructions for r in chosen),
    }


def counterfactuals_view(run: RunData) -> dict[str, Any]:
    st = counterfactual_stats(run.records("counterfactuals"))
    fmt = lambda d: ", ".join(f"{k}: {v}" for k, v in d.items())  # noqa: E731
    return {
        "stats": st,
        "pairs": [
            ("records", st["records"]),
            ("source samples", st["sources"]),
            ("strategy", fmt(st["strategy"])),
            ("level", fmt(st["level"])),
            ("verified", fmt(st["verified"])),
            ("removed characters per record (mean)", st["removed_chars_mean"]),
        ],
    }


# --- training, evaluation, attention -------------------------------------------------------------


def training_series(tr: TrainingRun) -> tuple[str, dict[str, list[tuple[float, float]]], dict[str, list]]:
    """The x axis name, the loss curves and the learning-rate curve of one training folder."""
    x_key = "step" if any("step" in m for m in tr.metrics) else None

    def xs(i: int, m: dict[str, Any]) -> float:
        return _as_float(m.get("step")) if x_key else float(i)

    losses = {
        key: [(xs(i, m), m[key]) for i, m in enumerate(tr.metrics) if isinstance(m.get(key), (int, float))]
        for key in ("loss", "kd_loss", "cd_loss")
    }
    lr = [(xs(i, m), m["lr"]) for i, m in enumerate(tr.metrics) if isinstance(m.get("lr"), (int, float))]
    return x_key or "logging step", {k: v for k, v in losses.items() if v}, {"lr": lr} if lr else {}


def chart(series: dict[str, list[tuple[float, float]]], title: str, x_label: str, height: float) -> dict[str, Any]:
    """A training chart drawn by matplotlib (:func:`leaf.figures.line_chart`) as a PNG to embed."""
    from leaf import figures

    fig = figures.line_chart(series, title=title, x_label=x_label, height=height)
    return {
        **png_image(figures.to_bytes(fig, dpi=CHART_DPI), CHART_DPI),
        "alt": title,
        "series": " ".join(series),
        "points": " ".join(str(len(v)) for v in series.values()),
    }


def training_view(run: RunData) -> list[dict[str, Any]]:
    runs = []
    for tr in run.training:
        view: dict[str, Any] = {"name": tr.name, "charts": [], "last": None, "config": None}
        runs.append(view)
        if not tr.metrics:
            continue
        x_label, losses, lr = training_series(tr)
        if losses:
            view["charts"].append(chart(losses, f"{tr.name}: loss", x_label, 3.0))
        if lr:
            view["charts"].append(chart(lr, f"{tr.name}: learning rate", x_label, 2.2))
        last = tr.metrics[-1]
        keys = [k for k in ("step", "epoch", "loss", "kd_loss", "cd_loss", "lr", "tokens_per_s") if k in last]
        view["last"] = [(k, f"{last[k]:.5g}" if isinstance(last[k], float) else fmt_num(last[k])) for k in keys]
        if tr.config:
            view["config"] = json.dumps(tr.config, indent=1, ensure_ascii=False)
    return runs


def evaluation_view(run: RunData) -> dict[str, Any]:
    columns, rows = evaluation_table(run.evaluations)
    best = {c: max((r["cells"][c]["accuracy"] for r in rows if c in r["cells"]), default=None) for c in columns}
    best_avg = max((r["average"] for r in rows if r["average"] is not None), default=None)
    body = []
    for r in rows:
        cells = []
        for c in columns:
            res = r["cells"].get(c)
            if res is None:
                cells.append({"text": "–", "best": False, "title": None})
                continue
            acc = float(res["accuracy"])
            cells.append({
                "text": f"{100 * acc:.2f}",
                "best": acc == best[c] and len(rows) > 1,
                "title": f'{res.get("correct", "?")}/{res.get("total", "?")} correct · task {res.get("task", "?")}',
            })
        avg = r["average"]
        cells.append({
            "text": "–" if avg is None else f"{100 * avg:.2f}",
            "best": avg is not None and avg == best_avg and len(rows) > 1,
            "title": f"mean over {len(r['cells'])} benchmark(s)",
        })
        body.append({"name": r["name"], "file": r["file"], "cells": cells})
    return {
        "columns": columns,
        "rows": body,
        "mixed": len({frozenset(r["cells"]) for r in rows}) > 1,
    }


ATTENTION_KEYS = ("share_on_span", "share_on_rest", "share_on_template", "span_density_ratio", "span_token_fraction")


def attention_models(run: RunData) -> list[dict[str, Any]]:
    """The per-model summaries of ``analysis/attention.json``.

    Each: label, samples, the ATTENTION_KEYS numbers, and the share on spans per layer.
    """
    models = []
    for m in (run.attention or {}).get("models", []):
        if isinstance(m, dict) and isinstance(m.get("summary"), dict):
            s = m["summary"]
            models.append({
                "label": str(m.get("label")),
                "samples": s.get("samples"),
                "numbers": [s.get(k) for k in ATTENTION_KEYS],
                "per_layer": list(s.get("per_layer", {}).get("share_on_span", []) or []),
            })
    return models


def attention_view(run: RunData) -> dict[str, Any]:
    models = attention_models(run) if run.attention is not None else []
    return {
        "present": run.attention is not None,
        "models": models,
        "depth": max((len(m["per_layer"]) for m in models), default=0),
        # the per-layer overview first, then the heatmaps (folded after the first figure)
        "figures": [
            {**png_image(data), "alt": name}
            for name, data in sorted(run.figures, key=lambda f: not f[0].startswith("attention_layers"))
        ],
    }


# --- summary and page ----------------------------------------------------------------------------


# What a part of the page raises when its records are not shaped as expected.
SHAPE_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError)


def _detection_numbers(run: RunData) -> list[tuple[str, str, str]]:
    st = detection_stats(run.records("detections"), run.instructions, top=0)
    return [
        ("detection samples", fmt_num(st["samples"]), "detections"),
        ("flagged tokens", f"{fmt_num(st['flagged_tokens'])} of {fmt_num(st['tokens'])} "
                           f"({fmt_num(st['flagged_percent'], 1)} %)", "detections"),
        ("samples with ≥ 1 span", f"{fmt_num(st['samples_with_spans'])} ({fmt_num(st['spans'])} spans)",
         "detections"),
    ]


def _counterfactual_numbers(run: RunData) -> list[tuple[str, str, str]]:
    st = counterfactual_stats(run.records("counterfactuals"))
    return [("counterfactual records", f"{st['records']} from {st['sources']} samples", "counterfactuals")]


def _training_losses(run: RunData) -> list[tuple[str, str, str]]:
    rows = []
    for tr in run.training:
        losses = [m["loss"] for m in tr.metrics if isinstance(m.get("loss"), (int, float))]
        if losses:
            rows.append((tr.name, f"{losses[0]:.4g}", f"{losses[-1]:.4g}"))
    return rows


def summary_view(run: RunData) -> dict[str, Any]:
    """The key numbers of the run, for the top of the page; each part only when the run has it.

    A part whose records are not shaped as expected is left out and named in ``unreadable``
    (its section shows the error), so it never hides the rest of the summary.
    """
    view: dict[str, Any] = {"numbers": [], "training": [], "evaluation": None, "attention": [],
                            "problems": len(run.errors), "unreadable": []}
    parts: list[tuple[str, str, bool, Callable[[], Any]]] = [
        ("numbers", "detections", run.has("detections"), lambda: _detection_numbers(run)),
        ("numbers", "counterfactuals", run.has("counterfactuals"), lambda: _counterfactual_numbers(run)),
        ("training", "training", bool(run.training), lambda: _training_losses(run)),
        ("evaluation", "evaluation", bool(run.evaluations), lambda: evaluation_view(run)),
        ("attention", "attention", run.attention is not None,
         lambda: [(m["label"], m["numbers"][0]) for m in attention_models(run)]),
    ]
    for key, section, present, make in parts:
        if not present:
            continue
        try:
            value = make()
        except SHAPE_ERRORS:
            view["unreadable"].append(section)
            continue
        if key == "numbers":
            view["numbers"] += value
        else:
            view[key] = value
    return view


def _guarded(ident: str, title: str, make: Callable[[], Markup]) -> Markup:
    """A section, or its heading and the error when its records are not shaped as expected."""
    try:
        return make()
    except SHAPE_ERRORS as exc:
        return render("error.html.jinja", ident=ident, title=title, error=f"{type(exc).__name__}: {exc}")


# --- a benchmark over seeds (leaf demo's results.json) --------------------------------------------


def _pct(cell: dict[str, Any]) -> str:
    """``mean ± std`` in percent (the mean alone for one seed)."""
    mean = f"{100 * cell['mean']:.1f}"
    return mean if cell.get("n", 1) < 2 else f"{mean} ± {100 * cell['std']:.1f}"


def benchmark_view(path: Path) -> dict[str, Any]:
    """Tables of a ``leaf demo`` results file (docs/demo.md schema), and ``arms.png`` beside it when present."""
    results = json.loads(Path(path).read_text(encoding="utf-8"))
    summary = results["summary"]
    splits = list(next(iter(summary["accuracy"].values())))
    families = list(summary.get("families", []))
    rows = []
    for arm, by_split in summary["accuracy"].items():
        cells = [_pct(by_split[s]) for s in splits]
        fam = summary.get("by_family", {}).get(arm, {})
        cells += [_pct(fam["counterfactual"][f]) for f in families if fam]
        rows.append({"arm": arm, "cells": cells})
    tests = []
    for arm, by_ref in summary.get("paired", {}).items():
        for ref, t in by_ref.items():
            cell = t["counterfactual"]
            tests.append({"arm": arm, "ref": ref, "diff": f"{cell['diff_mean']:+.1f} ± {cell['diff_std']:.1f}",
                          "p": f"{cell['pooled_p']:.2g}", "record": f"{cell['wins']}/{cell['losses']}"})
    figure = None
    png = Path(path).with_name("arms.png")
    if png.exists():
        figure = {**png_image(png.read_bytes(), 110), "alt": "counterfactual against clean accuracy per arm "
                                                             "(error bars: standard deviation over seeds)"}
    return {"file": str(path), "seeds": len(results.get("seeds", [])),
            "columns": splits + [f"{f} cf" for f in families], "rows": rows, "tests": tests,
            "goals": summary.get("goals", []), "figure": figure}


def build_page(run: RunData, *, title: str | None = None, shown: int = 5, top: int = 20,
               benchmark: Path | None = None) -> str:
    """The whole page as a string; with ``benchmark`` (a demo results.json), its section comes first."""
    from leaf import __version__

    makers: dict[str, Callable[[], Markup]] = {
        "detections": lambda: render("detections.html.jinja", top=top,
                                     view=None if not run.has("detections") else detections_view(run, shown, top)),
        "counterfactuals": lambda: render("counterfactuals.html.jinja",
                                          view=None if not run.has("counterfactuals") else counterfactuals_view(run)),
        "training": lambda: render("training.html.jinja", runs=training_view(run)),
        "evaluation": lambda: render("evaluation.html.jinja",
                                     view=evaluation_view(run) if run.evaluations else None),
        "attention": lambda: render("attention.html.jinja", view=attention_view(run)),
    }
    return environment().get_template("report.html.jinja").render(
        title=title or f"LeaF run: {run.root.name}",
        root=str(run.root),
        when=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        version=__version__,
        nav=[("summary", "Summary")] + ([("benchmark", "Benchmark")] if benchmark else [])
        + [(ident, short) for ident, _, short in SECTIONS],
        summary=_guarded("summary", "Summary", lambda: render("summary.html.jinja", view=summary_view(run))),
        missing=run.missing,
        errors=run.errors,
        sections=([_guarded("benchmark", "Benchmark over seeds", lambda: render(
            "benchmark.html.jinja", view=benchmark_view(benchmark)))] if benchmark else [])
        + [_guarded(ident, heading, makers[ident]) for ident, heading, _ in SECTIONS],
    ) + "\n"
