"""``analyze``: measure how much response tokens attend to flagged spans, for several models.

For each model (e.g. the student before and after distillation, and the
teacher) and each sample with known spans, the original sample is rendered
with :func:`leaf.data.render.render`, run once with eager attention, and
reduced with :mod:`leaf.analyze.attention`. Per-sample results are appended to
``OUT/attention_samples.jsonl`` as they finish (a rerun resumes); at the end
they are gathered into ``OUT/attention.json`` and drawn (``OUT/*.png``).
Schemas: docs/analysis.md.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from leaf.analyze.config import AnalyzeConfig
from leaf.config import Summary, make, to_dict

SAMPLES_FILE = "attention_samples.jsonl"
RESULT_FILE = "attention.json"


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return sum(values) / len(values) if values else None


def _stderr(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    if len(values) < 2:
        return None
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1) / len(values))


def analyze_sample(
    model: Any,
    tokenizer: Any,
    sample: Any,
    *,
    max_length: int,
    profile: bool,
    collect: str = "output_attentions",
    escape_special: bool = False,
) -> dict[str, Any]:
    """Attention shares of one :class:`~leaf.analyze.spans.SpanSample` (one forward pass).

    ``collect``: ``output_attentions`` (all layers' weights returned by the model) or
    ``hooks`` (each layer reduced as it is computed; see :mod:`leaf.analyze.capture`).
    ``escape_special``: the sample's own characters are tokenised as ordinary text
    (``--special-tokens-in-text escape``, :mod:`leaf.data.special`).
    """
    import torch

    from leaf.analyze.attention import density_ratio, layer_shares, token_groups
    from leaf.data.render import encode, render
    from leaf.models import input_device

    rendered = render(tokenizer, sample.instruction, sample.response)
    enc = encode(tokenizer, rendered.text,
                 (rendered.instruction_span, rendered.response_span) if escape_special else ())
    base = {"id": sample.id, "spans": [list(s) for s in sample.spans], "n_tokens": len(enc)}
    if len(enc) > max_length:
        return {**base, "skipped": f"longer than --max-length ({len(enc)} > {max_length} tokens)"}
    flagged = [rendered.instruction_to_text(s, e) for s, e in sample.spans]
    groups = token_groups(enc.offsets, rendered.instruction_span, rendered.response_span, flagged)
    counts = {
        "n_span_tokens": len(groups.span),
        "n_rest_tokens": len(groups.rest),
        "n_template_tokens": len(groups.template),
        "n_response_tokens": len(groups.response),
    }
    if not groups.span:
        return {**base, **counts, "skipped": "no token overlaps the flagged spans"}
    ids = torch.tensor([enc.input_ids], device=input_device(model))
    if collect == "hooks":
        from leaf.analyze.attention import combine_layers, one_layer
        from leaf.analyze.capture import attention_hooks

        results: dict[int, Any] = {}

        def reduce(layer: int, weights: torch.Tensor) -> None:
            results[layer] = one_layer(weights, groups, profile=profile)

        with torch.no_grad(), attention_hooks(model, reduce) as n_layers:
            model(input_ids=ids, use_cache=False)
        if sorted(results) != list(range(n_layers)):
            raise RuntimeError(f"attention hooks saw layers {sorted(results)}, expected 0..{n_layers - 1}")
        shares = combine_layers([results[i] for i in range(n_layers)])
    else:
        with torch.no_grad():
            out = model(input_ids=ids, output_attentions=True, use_cache=False)
        if not out.attentions or out.attentions[0] is None:
            raise RuntimeError("the model returned no attention weights; it must support attn_implementation='eager'")
        shares = layer_shares(out.attentions, groups, profile=profile)
        del out
    span, rest, template = _mean(shares.span), _mean(shares.rest), _mean(shares.template)
    rec: dict[str, Any] = {
        **base,
        **counts,
        "share_on_span": span,
        "share_on_rest": rest,
        "share_on_template": template,
        "raw_share_on_response": _mean(shares.raw_response),
        "span_density_ratio": density_ratio(span, rest, len(groups.span), len(groups.rest)),
        "per_layer": {
            "share_on_span": shares.span,
            "share_on_rest": shares.rest,
            "share_on_template": shares.template,
            "raw_share_on_response": shares.raw_response,
        },
    }
    if profile:
        span_set = set(groups.span)
        rec["tokens"] = [
            {
                "text": rendered.text[enc.offsets[i][0] : enc.offsets[i][1]],
                "span": i in span_set,
                "attention": [layer[k] for layer in shares.profile],
            }
            for k, i in enumerate(groups.instruction)
        ]
    return rec


def summarise(records: list[dict[str, Any]], num_layers: int) -> dict[str, Any]:
    """Means over analysed samples (per layer and overall) plus skip counts."""
    done = [r for r in records if "skipped" not in r]
    skipped: dict[str, int] = {}
    for r in records:
        if "skipped" in r:
            reason = r["skipped"].split(" (")[0]
            skipped[reason] = skipped.get(reason, 0) + 1
    per_layer: dict[str, list[float | None]] = {}
    per_layer_se: dict[str, list[float | None]] = {}
    for key in ("share_on_span", "share_on_rest", "share_on_template", "raw_share_on_response"):
        per_layer[key] = [_mean([r["per_layer"][key][i] for r in done]) for i in range(num_layers)]
        per_layer_se[key] = [_stderr([r["per_layer"][key][i] for r in done]) for i in range(num_layers)]
    return {
        "samples": len(done),
        "skipped": skipped,
        "share_on_span": _mean([r["share_on_span"] for r in done]),
        "share_on_span_stderr": _stderr([r["share_on_span"] for r in done]),
        "share_on_rest": _mean([r["share_on_rest"] for r in done]),
        "share_on_template": _mean([r["share_on_template"] for r in done]),
        "raw_share_on_response": _mean([r["raw_share_on_response"] for r in done]),
        "span_density_ratio": _mean([r["span_density_ratio"] for r in done if r["span_density_ratio"] is not None]),
        "span_token_fraction": _mean([r["n_span_tokens"] / (r["n_span_tokens"] + r["n_rest_tokens"]) for r in done]),
        "per_layer": per_layer,
        "per_layer_stderr": per_layer_se,
    }


@dataclass
class AnalyzeSummary(Summary):
    """``result`` is the content written to ``OUT/attention.json`` (schema: docs/analysis.md)."""

    out: Path
    result: dict[str, Any]

    @property
    def models(self) -> list[dict[str, Any]]:
        return list(self.result["models"])

    def line(self) -> str:
        lines = []
        for m in self.models:
            s = m["summary"]
            share = "n/a" if s["share_on_span"] is None else f"{s['share_on_span']:.4f}"
            ratio = "n/a" if s["span_density_ratio"] is None else f"{s['span_density_ratio']:.3f}"
            skipped = sum(s["skipped"].values())
            lines.append(f"{m['label']}: {s['samples']} samples ({skipped} skipped), mean share on spans {share}, "
                         f"per-token ratio span/rest {ratio}")
        return "\n".join([*lines, f"wrote {self.out / RESULT_FILE}"])


def analyze(config: AnalyzeConfig | None = None, **kwargs: Any) -> AnalyzeSummary:
    """Run the analysis; write ``OUT/attention.json`` and return it in a summary."""
    from tqdm.auto import tqdm

    from leaf.analyze.spans import load_span_samples
    from leaf.data.jsonl import ResumableJsonl, read_jsonl, write_atomic
    from leaf.data.records import id_key, record_locations
    from leaf.data.special import apply_policy, scan
    from leaf.models import load_model, load_tokenizer

    config = make(AnalyzeConfig, config, kwargs, "leaf.analyze()")
    if config.plots:
        from leaf.analyze.plots import pyplot

        pyplot()  # fail before any model is loaded when matplotlib is missing
    kind, samples = load_span_samples(config.data, config.samples)
    if config.max_samples is not None:
        samples = samples[: config.max_samples]
    if not samples:
        raise ValueError(f"{config.data}: no instruction-level sample with spans to analyse")
    tokenizers = {label: load_tokenizer(name) for name, label in zip(config.model, config.labels())}
    source = config.samples if config.samples is not None else config.data
    apply_policy(config.special_tokens_in_text, scan(samples, tokenizers, lambda: record_locations(source)))
    out_dir = Path(config.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = {
        k: v for k, v in to_dict(config).items() if k in ("model", "data", "samples", "label", "max_length", "dtype")
    }
    settings["label"] = config.labels()
    if config.responses is not None:  # absent without it, so files written before the option existed still resume
        settings["responses"] = [str(p) for p in config.responses]
    escape = config.special_tokens_in_text == "escape"
    if escape:  # other token ids: not resumable from a run without it
        settings["special_tokens_in_text"] = "escape"
    writer = ResumableJsonl(out_dir / SAMPLES_FILE, settings, key="key", overwrite=config.overwrite)
    heat_ids = {id_key(s.id) for s in samples[: config.heatmaps]}
    models: list[dict[str, Any]] = []
    answers = [None] * len(config.model) if config.responses is None else [own_answers(p) for p in config.responses]
    per_model: dict[str, list[Any]] = {}
    for name, label, own in zip(config.model, config.labels(), answers):
        mine = samples if own is None else [replace(s, response=own[id_key(s.id)]) for s in samples
                                            if id_key(s.id) in own]
        if not mine:
            raise ValueError(f"{label}: its --responses file holds no generation for any sample of {config.data}")
        per_model[label] = mine
        todo = [s for s in mine if _key(label, s.id) not in writer.done]
        model = None
        if todo:
            tokenizer = tokenizers[label]
            model = load_model(
                name,
                dtype=config.dtype,
                device=config.device,
                device_map=config.device_map,
                attn_implementation="eager",
                tokenizer=tokenizer,
            )
            model_config = model.config
        else:
            from transformers import AutoConfig

            model_config = AutoConfig.from_pretrained(name)
        for sample in tqdm(todo, desc=f"attention {label}", unit="sample", disable=None):
            rec = analyze_sample(
                model,
                tokenizer,
                sample,
                max_length=config.max_length,
                profile=id_key(sample.id) in heat_ids,
                collect=config.collect,
                escape_special=escape,
            )
            writer.write_batch([{"key": _key(label, sample.id), "model": label, **rec}])
        del model
        text_config = getattr(model_config, "get_text_config", lambda: model_config)()
        models.append(
            {
                "label": label,
                "model": name,
                "num_layers": int(text_config.num_hidden_layers),
                "num_heads": int(text_config.num_attention_heads),
            }
        )

    stored: dict[str, dict[str, Any]] = {}
    for rec in read_jsonl(writer.commit()):
        stored[rec["key"]] = {k: v for k, v in rec.items() if k not in ("key", "model")}
    for entry in models:
        records = [stored[_key(entry["label"], s.id)] for s in per_model[entry["label"]]]
        entry["summary"] = summarise(records, entry["num_layers"])
        entry["samples"] = records
    result: dict[str, Any] = {
        "version": 1,
        "data": str(config.data),
        "data_kind": kind,
        "settings": to_dict(config),
        "models": models,
        "figures": {},
    }
    if config.plots:
        from leaf.analyze.plots import draw_all

        result["figures"] = draw_all(result, out_dir)
    write_atomic(out_dir / RESULT_FILE, json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    return AnalyzeSummary(out_dir, result)


def own_answers(path: Path) -> dict[str, str]:
    """``id -> generation`` of a generations file (``leaf evaluate``), each cut after its first line starting with
    ``####`` (the answer line of GSM8K-style responses) when it has one."""
    from leaf.data.jsonl import read_jsonl
    from leaf.data.records import id_key

    out: dict[str, str] = {}
    for lineno, rec in enumerate(read_jsonl(path), 1):
        if "id" not in rec or not isinstance(rec.get("generation"), str):
            raise ValueError(f"{path}:{lineno}: field 'generation': expected a record with 'id' and a 'generation' string")
        text = rec["generation"]
        lines = text.split("\n")
        for i, line in enumerate(lines):
            if line.lstrip().startswith("####"):
                text = "\n".join(lines[: i + 1])
                break
        out[id_key(rec["id"])] = text.strip() or text
    return out


def _key(label: str, sample_id: Any) -> str:
    return json.dumps([label, str(sample_id)], ensure_ascii=False)
