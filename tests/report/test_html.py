"""The report page: parts present/missing, numbers, colouring, escaping, no external assets."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser

import pytest

from leaf.cli import main
from leaf.report import build_report
from leaf.report.stats import detection_stats, evaluation_table, minmax, span_text

from .conftest import FLAGGED, SAMPLES, detection, write_run
from leaf.data.detections import as_detection


class Page(HTMLParser):
    """Elements as (tag, attrs, text-inside) plus the text of each tag id/class of interest."""

    VOID = {"meta", "img", "br", "input", "link", "hr", "rect", "line", "circle"}

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.elements: list[dict] = []
        self.stack: list[dict] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        el = {"tag": tag, "attrs": dict(attrs), "text": "", "parents": [e["tag"] for e in self.stack]}
        self.elements.append(el)
        if tag not in self.VOID:
            self.stack.append(el)

    def handle_startendtag(self, tag, attrs):
        self.elements.append({"tag": tag, "attrs": dict(attrs), "text": "", "parents": []})

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i]["tag"] == tag:
                del self.stack[i:]
                break

    def handle_data(self, data):
        for el in self.stack:
            el["text"] += data

    def find(self, tag=None, **attrs):
        out = []
        for el in self.elements:
            if tag and el["tag"] != tag:
                continue
            if all(
                (k == "class_" and v in el["attrs"].get("class", "").split()) or el["attrs"].get(k) == v
                for k, v in attrs.items()
            ):
                out.append(el)
        return out

    def by_id(self, ident):
        found = self.find(id=ident)
        assert len(found) == 1, f"expected one element #{ident}, found {len(found)}"
        return found[0]


def _render(root, **kw):
    return Page(build_report(run=root, **kw).read_text(encoding="utf-8"))


def test_full_run_has_every_part_and_nothing_external(run_folder):
    page = _render(run_folder)
    for ident in ("detections", "counterfactuals", "training", "evaluation", "attention", "samples",
                  "detection-stats"):
        page.by_id(ident)
    assert not page.find(id="missing") and not page.find(id="errors")
    # one script (ours): the <script> inside an instruction is text, not an element
    scripts = page.find("script")
    assert len(scripts) == 1 and "data-ready" in scripts[0]["text"]
    assert "<script>alert('x')</script>" in page.by_id("samples")["text"]
    # nothing is fetched from anywhere: every src is a data URI, every href an in-page anchor
    for el in page.elements:
        for attr in ("src", "href"):
            value = el["attrs"].get(attr)
            if value is not None:
                assert value.startswith("data:") or value.startswith("#"), (el["tag"], attr, value[:40])
        assert el["tag"] not in ("link", "iframe", "object", "embed")
    imgs = page.find("img", class_="analysis")
    written = {p.name: p.read_bytes() for p in (run_folder / "analysis").glob("*.png")}
    assert sorted(i["attrs"]["alt"] for i in imgs) == sorted(written)
    for img in imgs:
        prefix = "data:image/png;base64,"
        assert img["attrs"]["src"].startswith(prefix)
        assert base64.b64decode(img["attrs"]["src"][len(prefix):]) == written[img["attrs"]["alt"]]
    # the training charts: PNGs drawn by matplotlib, embedded the same way
    charts = page.find("img", class_="chart")
    assert len(charts) == 4 and len(page.find("img")) == len(imgs) + len(charts)
    for img in charts:
        data = base64.b64decode(img["attrs"]["src"][len("data:image/png;base64,"):])
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and int(img["attrs"]["width"]) > 300


def test_tokens_are_coloured_by_saliency_and_spans_marked(run_folder):
    page = _render(run_folder, shown=5)
    records = [detection(s, FLAGGED[str(s["id"])]) for s in SAMPLES]
    samples = page.find("div", class_="sample")
    # those with spans first, then the others
    assert [s["attrs"]["data-id"] for s in samples] == ["gsm-1", "2", "q3"]
    tokens = [e for e in page.elements if e["tag"] == "span" and "tok" in e["attrs"].get("class", "").split()]
    n_tokens = sum(len(r["tokens"]) for r in records)
    assert len(tokens) == 3 * n_tokens  # teacher, student and d rows
    flagged = [t for t in tokens if "flag" in t["attrs"]["class"].split()]
    assert len(flagged) == 3 * sum(t["flag"] for r in records for t in r["tokens"])
    in_span = [t for t in tokens if "in-span" in t["attrs"]["class"].split()]
    assert len(in_span) == len(flagged)  # in the fixture, flagged tokens are exactly the span tokens

    # colour intensity = min-max normalised saliency (teacher, student) and 1 - d, in token order
    rec = records[0]
    g_t = [t["g_teacher"] for t in rec["tokens"]]
    lo, hi = min(g_t), max(g_t)
    expected = {
        "teacher": [(v - lo) / (hi - lo) for v in g_t],
        "student": minmax([t["g_student"] for t in rec["tokens"]]),
        "d": [1 - t["score"] for t in rec["tokens"]],
    }
    rows = [e for e in page.elements if e["tag"] == "div" and e["attrs"].get("data-mode")]
    first_sample_rows = rows[:3]
    assert [r["attrs"]["data-mode"] for r in first_sample_rows] == ["teacher", "student", "d"]
    n = len(rec["tokens"])
    for k, mode in enumerate(("teacher", "student", "d")):
        mine = tokens[k * n : (k + 1) * n]
        alphas = [float(re.search(r"rgba\(\d+,\d+,\d+,([0-9.]+)\)", t["attrs"]["style"]).group(1)) for t in mine]
        assert alphas == pytest.approx(expected[mode], abs=1e-3)
        # the exact instruction text (newline included), recovered from the counterfactuals
        assert first_sample_rows[k]["text"].endswith(SAMPLES[0]["instruction"])


def test_statistics_and_tables(run_folder):
    page = _render(run_folder)
    records = [detection(s, FLAGGED[str(s["id"])]) for s in SAMPLES]
    n_tok = sum(len(r["tokens"]) for r in records)
    n_flag = sum(t["flag"] for r in records for t in r["tokens"])
    stats = {
        row[0]: row[1]
        for row in _rows(page, page.find("table", class_="stats")[0])
    }
    assert stats["samples"] == "3"
    assert stats["flagged tokens"] == str(n_flag)
    assert stats["flagged tokens (%)"] == f"{100 * n_flag / n_tok:.3f}"
    assert stats["spans per sample (mean)"] == f"{3 / 3:.3f}"
    assert stats["spans per sample (max)"] == "2"
    top = {row[0]: row[1] for row in _rows(page, page.find("table", class_="top-strings")[0])[1:]}
    assert top == {"hint: 42.": "1", "<script>alert('x')</script>": "1", "key 42": "1"}

    evals = _rows(page, page.find("table", class_="eval-table")[0])
    assert evals[0] == ["model", "gsm8k", "math500", "humaneval", "average"]
    avg = 100 * (0.58 + 0.35 + 64 / 164) / 3
    assert evals[1] == ["student-leaf", "58.00", "35.00", f"{100 * 64 / 164:.2f}", f"{avg:.2f}"]
    assert evals[2] == ["student-pre", "45.00", "24.00", "–", f"{100 * (0.45 + 0.24) / 2:.2f}"]
    bold = [e["text"] for e in page.elements if e["tag"] == "td" and "best" in e["attrs"].get("class", "").split()]
    assert "58.00" in bold and "45.00" not in bold

    att = _rows(page, page.find("table", class_="attention-table")[0])
    assert [r[0] for r in att[1:]] == ["student", "student-leaf"] and att[1][2] == "0.2100"

    # training: one chart of losses (3 series, 20 points each) and one of lr per run
    runs = page.find("div", class_="training-run")
    assert [r["attrs"]["data-run"] for r in runs] == ["train", "train-kd"]
    charts = page.find("figure", class_="chart")
    assert [(c["attrs"]["data-series"], c["attrs"]["data-points"]) for c in charts] == 2 * [
        ("loss kd_loss cd_loss", "20 20 20"), ("lr", "20")
    ]
    assert [img["attrs"]["alt"] for img in page.find("img", class_="chart")] == [
        "train: loss", "train: learning rate", "train-kd: loss", "train-kd: learning rate"
    ]
    last = _rows(page, page.find("table", class_="last-values")[0])
    assert last[1][0] == "20" and float(last[1][2]) == pytest.approx(0.5 * (2 + 1.5) / 20 ** 0.5, rel=1e-4)


def _rows(page, table):
    """Cell texts of ``table`` (an element of ``page``), row by row, header included."""
    start = page.elements.index(table)
    rows, current = [], None
    for el in page.elements[start + 1 :]:
        if el["tag"] == "table":
            break
        if el["tag"] == "tr":
            current = []
            rows.append(current)
        elif el["tag"] in ("td", "th") and current is not None:
            current.append(el["text"].strip())
    return rows


def test_missing_and_broken_parts_are_named(tmp_path):
    root = write_run(tmp_path / "run", parts=("eval",))
    (root / "eval" / "broken.json").write_text("{not json")
    (root / "analysis").mkdir()
    (root / "analysis" / "fake.png").write_text("not a png")
    page = _render(root)
    missing = page.by_id("missing")["text"]
    for part in ("detections.jsonl", "counterfactuals.jsonl", "train*/metrics.jsonl", "analysis/attention.json"):
        assert part in missing
    assert "eval/*.json" not in missing
    errors = page.by_id("errors")["text"]
    assert "broken.json: cannot read" in errors and "fake.png: not a PNG" in errors
    for ident in ("detections", "counterfactuals", "training", "attention"):
        assert "Not in this run" in page.by_id(ident)["text"]
    assert page.find("table", class_="eval-table")
    assert not page.find("img")


def test_empty_run_and_cli(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", "--run", str(tmp_path / "empty"), "--out", str(tmp_path / "r.html")]) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "not in this run: detections.jsonl" in out
    page = Page((tmp_path / "r.html").read_text())
    assert len(page.by_id("missing")["text"].split("(leaf ")) == 6  # five parts named
    assert main(["report", "--run", str(tmp_path / "nope")]) == 2


def test_instruction_text_without_counterfactuals_uses_meta_samples_path(tmp_path):
    root = write_run(tmp_path / "run", parts=("detections",))
    data = tmp_path / "samples.jsonl"
    data.write_text("".join(json.dumps(s) + "\n" for s in SAMPLES))
    meta = json.loads((root / "detections.jsonl.meta.json").read_text())
    page = _render(root)  # no instruction text: one space between tokens, newline lost
    first = [e for e in page.elements if e["attrs"].get("data-mode") == "teacher"][0]["text"]
    assert first.endswith(" ".join(SAMPLES[0]["instruction"].split()))
    meta["settings"]["data"] = str(data)
    (root / "detections.jsonl.meta.json").write_text(json.dumps(meta))
    page = _render(root)
    first = [e for e in page.elements if e["attrs"].get("data-mode") == "teacher"][0]["text"]
    assert first.endswith(SAMPLES[0]["instruction"])


def test_stats_helpers():
    assert minmax([2.0, 4.0, 3.0]) == [0.0, 1.0, 0.5]
    assert minmax([1.0, 1.0]) == [0.0, 0.0]
    rec = as_detection(detection(SAMPLES[0], ["hint: 42."]))
    assert span_text(rec, rec.spans[0], None) == "hint: 42."
    assert span_text(rec, [0, 7], SAMPLES[0]["instruction"]) == "Tom has"
    st = detection_stats([rec, as_detection(detection(SAMPLES[2], []))])
    assert st["samples_with_spans"] == 1 and st["spans_per_sample_histogram"] == {0: 1, 1: 1}
    cols, rows = evaluation_table([("a", {"benchmarks": {"x": {"accuracy": 0.5}, "y": {"accuracy": 1.0}}})])
    assert cols == ["x", "y"] and rows[0]["average"] == 0.75 and rows[0]["name"] == "a"


def test_a_malformed_part_does_not_hide_the_others(tmp_path):
    root = write_run(tmp_path / "run", parts=("detections", "eval"))
    (root / "detections.jsonl").write_text(json.dumps({"id": 1, "spans": [[1, 2, 3]], "tokens": "oops"}) + "\n")
    page = _render(root)
    assert "This part could not be shown" in page.by_id("detections")["text"]
    assert page.find("table", class_="eval-table")
    # the summary leaves the detections out, says so, and still shows the evaluation
    assert "Left out of this summary" in page.by_id("summary")["text"]
    assert not page.find("table", class_="summary-numbers") and page.find("table", class_="eval-summary")


def test_templates_ship_with_the_package_and_escape():
    """The page is rendered from templates found through the package loader (what an installed wheel has)."""
    import jinja2

    from leaf.report.html import environment

    env = environment()
    assert isinstance(env.loader, jinja2.PackageLoader) and env.autoescape is True
    shipped = set(env.list_templates())
    for name in ("report.html.jinja", "report.css.jinja", "report.js.jinja", "macros.html.jinja",
                 "summary.html.jinja", "detections.html.jinja", "counterfactuals.html.jinja",
                 "training.html.jinja", "evaluation.html.jinja", "attention.html.jinja", "error.html.jinja"):
        assert name in shipped
        env.get_template(name)  # parses
    # a fresh loader on the package finds the same files (not a path next to this test)
    source, filename, _ = jinja2.PackageLoader("leaf.report", "templates").get_source(env, "report.css.jinja")
    assert ".tokrow" in source and filename.endswith("report.css.jinja")
    assert str(env.get_template("error.html.jinja").render(ident="x", title="<t>", error="<e>")).count("&lt;") == 2


def _ancestors(page, el):
    """The tags (with attributes) enclosing ``el``, outermost first."""
    stack = []
    for e in page.elements[: page.elements.index(el) + 1]:
        while stack and len(stack) > len(e["parents"]):
            stack.pop()
        stack.append(e)
    return stack[:-1]


def test_page_opens_with_a_summary_and_folds_the_detail(tmp_path):
    root = write_run(tmp_path / "run")
    # a longer run: 15 samples each with its own flagged string, a hostile training folder name, 4 figures
    extra = [{"id": f"x{k}", "instruction": f"Add {k} and 1. Note{k}: zz{k}. Answer?"} for k in range(15)]
    with (root / "detections.jsonl").open("a") as fh:
        for s in extra:
            fh.write(json.dumps(detection(s, [f"zz{s['id'][1:]}."])) + "\n")
    (root / "train-<i>x").mkdir()
    (root / "train-<i>x" / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 2.0}) + "\n")
    for k in range(2):
        (root / "analysis" / f"attention_heatmap_{k + 1}_more.png").write_bytes(
            (root / "analysis" / "attention_layers.png").read_bytes())
    page = _render(root, shown=4, top=20)

    # the summary comes first, right under the header, with the key numbers
    sections = page.find("section")
    assert sections[0]["attrs"]["id"] == "summary"
    numbers = {r[0]: r[1] for r in _rows(page, page.find("table", class_="summary-numbers")[0])}
    records = [detection(s, FLAGGED[str(s["id"])]) for s in SAMPLES] + [
        detection(s, [f"zz{s['id'][1:]}."]) for s in extra]
    n_tok = sum(len(r["tokens"]) for r in records)
    n_flag = sum(t["flag"] for r in records for t in r["tokens"])
    assert numbers["detection samples"] == "18"
    assert numbers["flagged tokens"] == f"{n_flag} of {n_tok} ({100 * n_flag / n_tok:.1f} %)"
    assert numbers["samples with ≥ 1 span"] == "17 (18 spans)"
    training = _rows(page, page.find("table", class_="summary-training")[0])
    assert training[1][0] == "train" and float(training[1][2]) == pytest.approx(0.5 * (2 + 1.5) / 20 ** 0.5, 1e-3)
    assert training[2] == ["train-<i>x", "2", "2"]
    assert not [e for e in page.elements if e["tag"] == "i"]  # the folder name is text, never markup
    att = _rows(page, page.find("table", class_="summary-attention")[0])
    assert att[1:] == [["student", "0.2100"], ["student-leaf", "0.1200"]]
    assert _rows(page, page.find("table", class_="eval-summary")[0]) == _rows(
        page, page.find("table", class_="eval-table")[0])

    # detail folded: samples after the first, the long table of flagged strings, runs after the first,
    # figures after the first
    samples = page.find("div", class_="sample")
    assert len(samples) == 4
    folds = [page.elements[page.elements.index(s) + 1] for s in samples]
    assert all(f["tag"] == "details" for f in folds)
    assert ["open" in f["attrs"] for f in folds] == [True, False, False, False]
    top = page.find("table", class_="top-strings")[0]
    assert any(a["tag"] == "details" and "open" not in a["attrs"] for a in _ancestors(page, top))
    assert len(_rows(page, top)) == 1 + 3 + 15
    short = page.find("table", class_="histogram")[0]  # 2 rows: shown as is
    assert not any(a["tag"] == "details" for a in _ancestors(page, short))
    runs = page.find("div", class_="training-run")
    assert ["open" in page.elements[page.elements.index(r) + 1]["attrs"] for r in runs] == [True, False, False]
    figures = page.find("img", class_="analysis")
    assert len(figures) == 4
    folded = [any(a["tag"] == "details" for a in _ancestors(page, f)) for f in figures]
    assert folded == [False, True, True, True]


def test_benchmark_section_shows_a_demo_results_file(run_folder, tmp_path):
    """A `leaf demo` results.json: arms x splits as mean ± std in percent, paired tests, goals, the figure."""
    from leaf.figures import figure, save

    def cell(mean, std, n=3):
        return {"mean": mean, "std": std, "n": n}

    results = {"seeds": [{}, {}, {}], "summary": {
        "accuracy": {"kd": {"confounded": cell(0.952, 0.006), "counterfactual": cell(0.18, 0.015),
                            "clean": cell(0.859, 0.024)},
                     "leaf_resample": {"confounded": cell(0.922, 0.023), "counterfactual": cell(0.241, 0.053),
                                       "clean": cell(0.647, 0.039)}},
        "families": ["arith"],
        "by_family": {a: {s: {"arith": cell(0.5, 0.1)} for s in ("confounded", "counterfactual", "clean")}
                      for a in ("kd", "leaf_resample")},
        "paired": {"leaf_resample": {"kd": {"counterfactual": {"diff_mean": 6.1, "diff_std": 4.2, "pooled_p": 3e-6,
                                                               "wins": 3, "losses": 0, "seeds": [{}, {}, {}]}}}},
        "goals": [{"goal": "KD improves the student", "measured": "clean +15.2", "met": True}]}}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    fig, ax = figure(2, 2)
    ax.plot([0, 1], [0, 1])
    save(fig, tmp_path / "arms.png")
    html = build_report(run=run_folder, out=tmp_path / "page.html", benchmark=path).read_text()
    section = html[html.index('<section id="benchmark">'):html.index("</section>", html.index('<section id="benchmark">'))]
    assert "95.2 ± 0.6" in section and "24.1 ± 5.3" in section and "64.7 ± 3.9" in section
    assert "+6.1 ± 4.2" in section and "3e-06" in section and "3/0" in section
    assert "KD improves the student" in section and "data:image/png;base64" in section
    assert html.index('href="#benchmark"') < html.index('href="#detections"')
    # without --benchmark the page has no such section
    plain = build_report(run=run_folder, out=tmp_path / "plain.html").read_text()
    assert 'id="benchmark"' not in plain
