"""One self-contained HTML page of a run: inline CSS/JS/SVG, PNGs as base64 data URIs.

Every piece of text from the run is escaped with :func:`html.escape`; nothing
is loaded from outside the file, so it opens the same from disk, an e-mail or
an archive.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import math
from html import escape
from typing import Any

from leaf.report.load import RunData
from leaf.report.stats import counterfactual_stats, detection_stats, evaluation_table, minmax
from leaf.report.svg import line_chart

CSS = """
:root { --fg:#1b1f24; --muted:#5b6570; --line:#d9dee3; --bg:#ffffff; --soft:#f5f7f9; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       background: var(--bg); margin: 0 auto; max-width: 1100px; padding: 24px; }
h1 { font-size: 26px; margin: 0 0 4px; } h2 { font-size: 20px; margin: 32px 0 8px;
     border-bottom: 1px solid var(--line); padding-bottom: 4px; } h3 { font-size: 16px; margin: 18px 0 6px; }
.muted { color: var(--muted); } nav a { margin-right: 12px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 14px; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: var(--soft); } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.best { font-weight: 700; }
.missing { background: #fff8e1; border: 1px solid #f0d58c; padding: 8px 12px; border-radius: 6px; }
.errors { background: #fdecea; border: 1px solid #f5b7b1; padding: 8px 12px; border-radius: 6px; }
.sample { border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; margin: 10px 0; }
.tokrow { display: grid; grid-template-columns: 110px 1fr; gap: 8px; margin: 4px 0; }
.tokrow .label { color: var(--muted); font-size: 13px; padding-top: 2px; }
.tokrow .text { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 13px;
                white-space: pre-wrap; word-break: break-word; line-height: 1.9; }
.tok { border-radius: 2px; }
.tok.in-span { border-bottom: 2px solid #d62728; }
.tok.flag { outline: 1px solid #7a0000; }
.legend-box { display: inline-block; width: 14px; height: 14px; vertical-align: middle; border-radius: 2px; }
.controls label { margin-right: 14px; font-size: 14px; }
figure { margin: 12px 0; } figure img { max-width: 100%; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 13px; }
svg.chart { background: #fff; } svg .plot-area { fill: #fbfcfd; stroke: var(--line); }
svg .grid { stroke: #e6e9ec; } svg .tick, svg .legend, svg .axis-label { font-size: 11px; fill: #333; }
svg .chart-title { font-size: 13px; font-weight: 600; }
details pre { background: var(--soft); padding: 8px; overflow-x: auto; font-size: 12px; }
"""

JS = """
(function () {
  var boxes = document.querySelectorAll('input[data-toggle]');
  for (var i = 0; i < boxes.length; i++) {
    boxes[i].addEventListener('change', function (ev) {
      var mode = ev.target.getAttribute('data-toggle');
      var rows = document.querySelectorAll('.tokrow[data-mode="' + mode + '"]');
      for (var j = 0; j < rows.length; j++) { rows[j].hidden = !ev.target.checked; }
    });
  }
  document.body.setAttribute('data-ready', '1');
})();
"""

# Colour of each saliency row (RGB); intensity = value in [0, 1].
COLOURS = {"teacher": (31, 119, 180), "student": (255, 127, 14), "d": (214, 39, 40)}
ROW_LABELS = {"teacher": "teacher ĝ<sup>T</sup>", "student": "student ĝ<sup>S</sup>", "d": "1 − d"}


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return _e(value)


def _table(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    """``rows`` hold ready HTML cells (``<td>...</td>``)."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _kv_table(pairs: list[tuple[str, Any]], cls: str = "") -> str:
    return _table(["", "value"], [[f"<th>{_e(k)}</th>", f'<td class="num">{_num(v)}</td>'] for k, v in pairs], cls)


def _missing(what: str) -> str:
    return f'<p class="missing">Not in this run: <code>{_e(what)}</code></p>'


# --- detections ----------------------------------------------------------------------------------


def _token_html(text: str, mode: str, value: float, tok: dict[str, Any], in_span: bool) -> str:
    r, g, b = COLOURS[mode]
    cls = "tok" + (" flag" if tok.get("flag") else "") + (" in-span" if in_span else "")
    title = (
        f"g_teacher={_num(tok.get('g_teacher'), 4)} g_student={_num(tok.get('g_student'), 4)} "
        f"d={_num(tok.get('score'), 4)}" + (" flagged" if tok.get("flag") else "")
    )
    style = f"background:rgba({r},{g},{b},{max(0.0, min(1.0, value)):.3f})"
    return f'<span class="{cls}" style="{style}" title="{_e(title)}">{_e(text)}</span>'


def _as_float(value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return 0.0
    return v if math.isfinite(v) else 0.0


def sample_html(record: dict[str, Any], instruction: str | None) -> str:
    """The instruction of one detection record, three times: coloured by ĝ^T, ĝ^S and 1 − d."""
    tokens = sorted(
        (t for t in record.get("tokens", []) if isinstance(t, dict) and "start" in t and "end" in t),
        key=lambda t: int(t["start"]),
    )
    spans = [(int(s), int(e)) for s, e in record.get("spans", [])]
    values = {
        "teacher": minmax([_as_float(t.get("g_teacher")) for t in tokens]),
        "student": minmax([_as_float(t.get("g_student")) for t in tokens]),
        "d": [1.0 - _as_float(t.get("score")) for t in tokens],
    }
    rows = []
    for mode in ("teacher", "student", "d"):
        pieces, last = [], int(record.get("truncated") or 0)
        if last:
            pieces.append(f'<span class="muted">[{last} characters cut] </span>')
        for tok, value in zip(tokens, values[mode]):
            start, end = int(tok["start"]), int(tok["end"])
            if start > last:  # the text between tokens (whitespace, usually)
                gap = instruction[last:start] if instruction is not None else " "
                pieces.append(_e(gap))
            in_span = any(start < e and end > s for s, e in spans)
            text = instruction[start:end] if instruction is not None else str(tok.get("text", ""))
            pieces.append(_token_html(text, mode, value, tok, in_span))
            last = max(last, end)
        if instruction is not None and last < len(instruction):
            pieces.append(_e(instruction[last:]))
        rows.append(
            f'<div class="tokrow" data-mode="{mode}"><div class="label">{ROW_LABELS[mode]}</div>'
            f'<div class="text">{"".join(pieces)}</div></div>'
        )
    n_flag = sum(1 for t in tokens if t.get("flag"))
    head = (
        f'<div class="muted">sample <b>{_e(record.get("id"))}</b> · method {_e(record.get("method", "?"))} · '
        f"{len(tokens)} tokens, {n_flag} flagged, {len(spans)} span(s) · loss teacher "
        f'{_num(record.get("loss_teacher"))}, student {_num(record.get("loss_student"))}</div>'
    )
    return f'<div class="sample" data-id="{_e(record.get("id"))}">{head}{"".join(rows)}</div>'


def detections_section(run: RunData, shown: int, top: int) -> str:
    if run.detections is None:
        return '<section id="detections"><h2>Detections</h2>' + _missing("detections.jsonl") + "</section>"
    recs = run.detections
    st = detection_stats(recs, run.instructions, top=top)
    pairs = [
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
    ]
    parts = ['<section id="detections"><h2>Detections</h2>', '<div id="detection-stats">', _kv_table(pairs, "stats")]
    hist = st["spans_per_sample_histogram"]
    if hist:
        parts.append("<h3>Spans per sample</h3>")
        parts.append(
            _table(
                ["spans", "samples"],
                [[f'<td class="num">{_e(k)}</td>', f'<td class="num">{_e(v)}</td>'] for k, v in hist.items()],
                "histogram",
            )
        )
    parts.append("</div>")
    parts.append(f"<h3>Most frequent flagged strings (top {top})</h3>")
    if st["top_strings"]:
        parts.append(
            _table(
                ["string", "count"],
                [[f"<td><code>{_e(s)}</code></td>", f'<td class="num">{n}</td>'] for s, n in st["top_strings"]],
                "top-strings",
            )
        )
    else:
        parts.append("<p>No span flagged.</p>")
    settings = (run.detections_meta or {}).get("settings") if isinstance(run.detections_meta, dict) else None
    if settings:
        parts.append(
            "<details><summary>detection settings (detections.jsonl.meta.json)</summary>"
            f"<pre>{_e(json.dumps(settings, indent=1, ensure_ascii=False))}</pre></details>"
        )
    chosen = ([r for r in recs if r.get("spans")] + [r for r in recs if not r.get("spans")])[:shown]
    parts.append(f'<h3>Samples ({len(chosen)} of {len(recs)}, those with spans first)</h3>')
    parts.append(
        '<p class="controls">'
        + "".join(
            f'<label><input type="checkbox" checked data-toggle="{m}"> '
            f'<span class="legend-box" style="background:rgb{COLOURS[m]}"></span> {ROW_LABELS[m]}</label>'
            for m in ("teacher", "student", "d")
        )
        + "</p>"
        '<p class="muted">Colour intensity: min-max normalised gradient saliency of the teacher and of the student, '
        "and 1 − d (d = normalised ĝ<sup>T</sup> − ĝ<sup>S</sup>; dark red = the student is far more sensitive than "
        "the teacher). Flagged tokens are outlined; flagged spans are underlined in red. Hover a token for its values."
        + (
            " Where a sample's original instruction was not found (see docs/report.md), its tokens are joined "
            "with single spaces."
            if any(str(r.get("id")) not in run.instructions for r in chosen)
            else ""
        )
        + "</p>"
    )
    parts.append('<div id="samples">')
    for rec in chosen:
        parts.append(sample_html(rec, run.instructions.get(str(rec.get("id")))))
    parts.append("</div></section>")
    return "".join(parts)


def counterfactuals_section(run: RunData) -> str:
    if run.counterfactuals is None:
        return (
            '<section id="counterfactuals"><h2>Counterfactual samples</h2>'
            + _missing("counterfactuals.jsonl")
            + "</section>"
        )
    st = counterfactual_stats(run.counterfactuals)
    fmt = lambda d: ", ".join(f"{k}: {v}" for k, v in d.items())  # noqa: E731
    pairs = [
        ("records", st["records"]),
        ("source samples", st["sources"]),
        ("strategy", fmt(st["strategy"])),
        ("level", fmt(st["level"])),
        ("verified", fmt(st["verified"])),
        ("removed characters per record (mean)", st["removed_chars_mean"]),
    ]
    return '<section id="counterfactuals"><h2>Counterfactual samples</h2>' + _kv_table(pairs, "stats") + "</section>"


# --- training, evaluation, attention -------------------------------------------------------------


def training_section(run: RunData) -> str:
    parts = ['<section id="training"><h2>Training</h2>']
    if not run.training:
        return parts[0] + _missing("train*/metrics.jsonl") + "</section>"
    for tr in run.training:
        parts.append(f'<div class="training-run" data-run="{_e(tr.name)}"><h3>{_e(tr.name)}</h3>')
        if not tr.metrics:
            parts.append("<p>metrics.jsonl is empty.</p></div>")
            continue
        x_key = "step" if any("step" in m for m in tr.metrics) else None
        def xs(i: int, m: dict[str, Any]) -> float:
            return _as_float(m.get("step")) if x_key else float(i)
        losses = {
            key: [(xs(i, m), m[key]) for i, m in enumerate(tr.metrics) if isinstance(m.get(key), (int, float))]
            for key in ("loss", "kd_loss", "cd_loss")
        }
        losses = {k: v for k, v in losses.items() if v}
        if losses:
            parts.append(line_chart(losses, title=f"{tr.name}: loss", x_label=x_key or "logging step"))
        lr = [(xs(i, m), m["lr"]) for i, m in enumerate(tr.metrics) if isinstance(m.get("lr"), (int, float))]
        if lr:
            parts.append(line_chart({"lr": lr}, title=f"{tr.name}: learning rate", x_label=x_key or "logging step",
                                    height=200))
        last = tr.metrics[-1]
        keys = [k for k in ("step", "epoch", "loss", "kd_loss", "cd_loss", "lr", "tokens_per_s") if k in last]
        parts.append("<p class='muted'>last logged values</p>")
        cells = [
            f'<td class="num">{f"{last[k]:.5g}" if isinstance(last[k], float) else _num(last[k])}</td>'
            for k in keys
        ]
        parts.append(_table([_e(k) for k in keys], [cells], "last-values"))
        if tr.config:
            parts.append(
                "<details><summary>leaf_config.json</summary>"
                f"<pre>{_e(json.dumps(tr.config, indent=1, ensure_ascii=False))}</pre></details>"
            )
        parts.append("</div>")
    parts.append("</section>")
    return "".join(parts)


def evaluation_section(run: RunData) -> str:
    head = '<section id="evaluation"><h2>Evaluation</h2>'
    if not run.evaluations:
        return head + _missing("eval/*.json") + "</section>"
    columns, rows = evaluation_table(run.evaluations)
    best = {c: max((r["cells"][c]["accuracy"] for r in rows if c in r["cells"]), default=None) for c in columns}
    best_avg = max((r["average"] for r in rows if r["average"] is not None), default=None)
    body = []
    for r in rows:
        cells = [f'<td title="{_e(r["file"])}.json">{_e(r["name"])}</td>']
        for c in columns:
            res = r["cells"].get(c)
            if res is None:
                cells.append('<td class="num">–</td>')
                continue
            acc = float(res["accuracy"])
            cls = "num best" if acc == best[c] and len(rows) > 1 else "num"
            tip = f'{res.get("correct", "?")}/{res.get("total", "?")} correct · task {res.get("task", "?")}'
            cells.append(f'<td class="{cls}" title="{_e(tip)}">{100 * acc:.2f}</td>')
        avg = r["average"]
        cls = "num best" if avg is not None and avg == best_avg and len(rows) > 1 else "num"
        cells.append(
            f'<td class="{cls}" title="mean over {len(r["cells"])} benchmark(s)">'
            f'{"–" if avg is None else f"{100 * avg:.2f}"}</td>'
        )
        body.append(cells)
    table = _table(["model"] + [_e(c) for c in columns] + ["average"], body, "eval-table")
    note = "Accuracy (%) per benchmark (pass@1 for code); best of each column in bold; hover a cell for counts."
    if len({frozenset(r["cells"]) for r in rows}) > 1:
        note += " Rows cover different benchmarks, so their averages are not comparable."
    return f'{head}<p class="muted">{note}</p>{table}</section>'


def attention_section(run: RunData) -> str:
    head = '<section id="attention"><h2>Attention on flagged spans</h2>'
    parts = [head]
    att = run.attention
    if att is None:
        parts.append(_missing("analysis/attention.json"))
    else:
        models = [m for m in att.get("models", []) if isinstance(m, dict) and isinstance(m.get("summary"), dict)]
        rows = []
        for m in models:
            s = m["summary"]
            rows.append(
                [f"<td>{_e(m.get('label'))}</td>", f'<td class="num">{_num(s.get("samples"))}</td>']
                + [f'<td class="num">{_num(s.get(k), 4)}</td>' for k in
                   ("share_on_span", "share_on_rest", "share_on_template", "span_density_ratio", "span_token_fraction")]
            )
        parts.append(
            '<p class="muted">Of the attention that response tokens put on the prompt (mean over heads, response '
            "tokens and layers): the share on flagged spans, on the rest of the instruction and on template tokens; "
            "the per-token ratio is attention per span token over attention per other instruction token "
            "(1 = no preference); the last column is the fraction of instruction tokens that are flagged.</p>"
        )
        parts.append(
            _table(["model", "samples", "share on spans", "share on rest", "share on template",
                    "per-token ratio span/rest", "flagged token fraction"], rows, "attention-table")
        )
        depth = max((len(m["summary"].get("per_layer", {}).get("share_on_span", [])) for m in models), default=0)
        if depth:
            layer_rows = []
            for m in models:
                vals = m["summary"]["per_layer"]["share_on_span"]
                layer_rows.append([f"<td>{_e(m.get('label'))}</td>"] + [
                    f'<td class="num">{_num(vals[i], 4) if i < len(vals) else "–"}</td>' for i in range(depth)
                ])
            parts.append("<h3>Share on spans per layer</h3>")
            parts.append(_table(["model"] + [str(i) for i in range(depth)], layer_rows, "attention-layers"))
    if run.figures:
        for name, data in run.figures:
            uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
            parts.append(f'<figure><img src="{uri}" alt="{_e(name)}"><figcaption>{_e(name)}</figcaption></figure>')
    elif att is not None:
        parts.append("<p>No figures (analysis/*.png) in this run.</p>")
    parts.append("</section>")
    return "".join(parts)


def _guarded(ident: str, title: str, make: Any) -> str:
    """A section, or its heading and the error when its records are not shaped as expected."""
    try:
        return make()
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        return (
            f'<section id="{ident}"><h2>{_e(title)}</h2><p class="errors">This part could not be shown: '
            f"{_e(type(exc).__name__)}: {_e(exc)} (are the files in the format of docs/report.md?)</p></section>"
        )


def build_page(run: RunData, *, title: str | None = None, shown: int = 5, top: int = 20) -> str:
    """The whole page as a string."""
    from leaf import __version__

    title = title or f"LeaF run: {run.root.name}"
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sections = [
        _guarded("detections", "Detections", lambda: detections_section(run, shown, top)),
        _guarded("counterfactuals", "Counterfactual samples", lambda: counterfactuals_section(run)),
        _guarded("training", "Training", lambda: training_section(run)),
        _guarded("evaluation", "Evaluation", lambda: evaluation_section(run)),
        _guarded("attention", "Attention on flagged spans", lambda: attention_section(run)),
    ]
    notes = ""
    if run.missing:
        notes += (
            '<div id="missing" class="missing"><b>Not in this run</b> (each part of the page is optional):<ul>'
            + "".join(f"<li><code>{_e(m)}</code></li>" for m in run.missing)
            + "</ul></div>"
        )
    if run.errors:
        notes += (
            '<div id="errors" class="errors"><b>Problems reading the run</b>:<ul>'
            + "".join(f"<li>{_e(m)}</li>" for m in run.errors[:50])
            + (f"<li>... and {len(run.errors) - 50} more</li>" if len(run.errors) > 50 else "")
            + "</ul></div>"
        )
    nav = "".join(
        f'<a href="#{k}">{v}</a>'
        for k, v in (("detections", "Detections"), ("counterfactuals", "Counterfactuals"), ("training", "Training"),
                     ("evaluation", "Evaluation"), ("attention", "Attention"))
    )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{_e(title)}</h1><p class=\"muted\">run folder <code>{_e(run.root)}</code> · "
        f"generated {when} by leaf {_e(__version__)}</p><nav>{nav}</nav></header>"
        f"{notes}{''.join(sections)}<script>{JS}</script></body></html>\n"
    )
