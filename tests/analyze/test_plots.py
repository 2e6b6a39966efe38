"""Figures of leaf analyze and the shared drawing helpers (leaf.figures): nothing drawn is cut off."""

from __future__ import annotations

import math
import struct
import warnings

import pytest

matplotlib = pytest.importorskip("matplotlib")
from matplotlib.figure import Figure  # noqa: E402

from leaf import figures  # noqa: E402
from leaf.analyze import plots  # noqa: E402

LONG = "supercalifragilisticexpialidocious_and_then_some"
WORDS = ["Tom", "has", "3", "apples", "\n", "It", "shows", "the", "hint:", "42.", LONG, "\t", " ", "How", "many?"]
SPAN = {"hint:", "42.", LONG}


def _record(n_layers: int, words: list[str] = WORDS) -> dict:
    tokens = [
        {"text": w, "span": w in SPAN, "attention": [((k + 1) * (layer + 2)) % 7 / 7 for layer in range(n_layers)]}
        for k, w in enumerate(words)
    ]
    n_span = sum(t["span"] for t in tokens)
    return {"id": "gsm-1", "tokens": tokens, "share_on_span": 0.234, "n_span_tokens": n_span,
            "n_rest_tokens": len(tokens) - n_span}


def _result(labels=("student", "student-after-leaf-distillation-with-a-long-name")) -> dict:
    models = []
    for k, label in enumerate(labels):
        layers = 2 + 2 * k
        models.append({
            "label": label, "num_layers": layers,
            "summary": {"samples": 1, "share_on_span": 0.2, "share_on_rest": 0.3, "share_on_template": 0.5,
                        "per_layer": {"share_on_span": [0.1 * (i + 1) for i in range(layers)]},
                        "per_layer_stderr": {"share_on_span": [0.01] * layers}},
            "samples": [_record(layers)],
        })
    return {"models": models}


class Saved:
    """One ``savefig`` call: the figure, its arguments, and (measured right after saving, with the
    renderer that drew it) the region of the figure the image shows and every text's box, in inches."""

    def __init__(self, fig: Figure, kwargs: dict):
        self.fig, self.kwargs = fig, kwargs
        # lay out and draw at the saving dpi, as savefig does (text extents and layout depend on it)
        fig.set_dpi(kwargs.get("dpi") or fig.dpi)
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        if kwargs.get("bbox_inches") == "tight":  # as savefig computes it
            pad = kwargs.get("pad_inches", matplotlib.rcParams["savefig.pad_inches"])
            self.region = fig.get_tightbbox(renderer).padded(pad)
        else:
            self.region = fig.bbox_inches
        inches = fig.dpi_scale_trans.inverted()
        self.texts = [(t.get_text(), t.get_window_extent(renderer).transformed(inches)) for t in _texts(fig)]
        legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
        self.legends = [lg.get_window_extent(renderer).transformed(inches) for lg in legends]

    def assert_nothing_cut(self, path) -> list[str]:
        """Check the region against the pixel size of the file written, then every text against the region."""
        size = _png_size(path)
        dpi = self.kwargs.get("dpi") or self.fig.dpi
        region = self.region
        assert abs(region.width * dpi - size[0]) <= 2 and abs(region.height * dpi - size[1]) <= 2, (region, size)
        for text, box in self.texts + [("legend", b) for b in self.legends]:
            assert (box.x0 >= region.x0 - 1e-3 and box.y0 >= region.y0 - 1e-3
                    and box.x1 <= region.x1 + 1e-3 and box.y1 <= region.y1 + 1e-3), (
                f"{text!r} at {box.bounds} is cut by the saved region {region.bounds}"
            )
        return [text for text, _ in self.texts]


def _texts(fig: Figure) -> list:
    """Every title, axis label and tick label with text, of every axes."""
    out = []
    for ax in fig.axes:
        out += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label]
        for axis in (ax.xaxis, ax.yaxis):
            # the tick labels drawn: those of the ticks inside the view limits, as Axis.draw picks them
            out += [t.label1 for t in axis._update_ticks() if t.label1.get_visible()]
    return [t for t in out if t.get_visible() and t.get_text()]


def _png_size(path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


@pytest.fixture
def saved(monkeypatch):
    """Every figure saved while the test runs (whatever code path saves it), as :class:`Saved`."""
    seen: list[Saved] = []
    original = Figure.savefig

    def spy(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        seen.append(Saved(self, kwargs))
        return out

    monkeypatch.setattr(Figure, "savefig", spy)
    return seen


def test_heatmap_labels_and_titles_are_whole_and_inside_the_saved_image(saved, tmp_path):
    result = _result()
    panels = [(m["label"], m["samples"][0]) for m in result["models"]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "constrained_layout not applied": no room was made for labels
        plots.draw_heatmap("gsm-1", panels, tmp_path / "h.png")
    assert len(saved) == 1
    texts = saved[0].assert_nothing_cut(tmp_path / "h.png")
    # full token text on the ticks, newline and tab made visible
    fig = saved[0].fig
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == [figures.token_label(w) for w in WORDS]
    assert "apples" in labels and "shows" in labels and LONG in labels and "\u23ce" in labels and "\u21e5" in labels
    assert any(t.startswith("student-after-leaf-distillation-with-a-long-name: sample gsm-1") for t in texts)
    # flagged tokens have red labels
    red = [t.get_text() for t in fig.axes[0].get_xticklabels() if t.get_color() == "#d62728"]
    assert red == ["hint:", "42.", LONG]


def test_layers_figure_is_not_cut_and_draw_all_names_the_files(saved, tmp_path):
    names = plots.draw_all(_result(), tmp_path)
    assert names == {"layers": "attention_layers.png", "heatmaps": ["attention_heatmap_0_gsm-1.png"]}
    assert len(saved) == 2
    layer_texts = saved[0].assert_nothing_cut(tmp_path / "attention_layers.png")
    assert "student-after-leaf-distillation-with-a-long-name" in layer_texts
    assert saved[1].assert_nothing_cut(tmp_path / "attention_heatmap_0_gsm-1.png")


def test_many_tokens_are_not_labelled(saved, tmp_path):
    words = [f"w{k}" for k in range(121)]
    plots.draw_heatmap(7, [("m", _record(3, words))], tmp_path / "h.png")
    assert saved[0].fig.axes[0].xaxis.label.get_text() == "instruction token"
    saved[0].assert_nothing_cut(tmp_path / "h.png")


def test_line_chart_draws_the_finite_points_in_order_and_is_not_cut(saved, tmp_path):
    title = "train-kd-with-a-rather-long-folder-name: loss <x>"
    fig = figures.line_chart(
        {"a": [(10, 1.0), (0, 0.0)], "b": [(5, float("nan")), (5, 0.5)], "c": [(1, float("inf"))]},
        title=title, x_label="step",
    )
    lines = fig.axes[0].get_lines()
    assert [ln.get_label() for ln in lines] == ["a", "b"]
    assert list(lines[0].get_xdata()) == [0.0, 10.0] and list(lines[0].get_ydata()) == [0.0, 1.0]
    assert list(lines[1].get_xdata()) == [5.0] and lines[1].get_marker() == "o"
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["a", "b"]
    figures.save(fig, tmp_path / "c.png")
    texts = saved[0].assert_nothing_cut(tmp_path / "c.png")  # the legend, right of the plot, included
    assert title in texts and "step" in texts and saved[0].legends


def test_empty_chart_and_helpers():
    fig = figures.line_chart({"a": [(1, math.nan)]}, title="t")
    assert not fig.axes[0].get_lines() and fig.axes[0].get_legend() is None
    assert [t.get_text() for t in fig.axes[0].texts] == ["no finite values"]
    data = figures.to_bytes(fig)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert figures.token_label("a\nb") == "a\u23ceb"
    assert figures.token_label("\n") == "\u23ce" and figures.token_label("") == "\u2423"
    assert figures.to_bytes(figures.line_chart({}, title="t"), fmt="svg").lstrip().startswith(b"<?xml")
