"""``leaf run RECIPE.yaml --dry-run``: what every stage reads and writes, and what it will cost, before it runs.

Nothing heavy is loaded: a model's size comes from its local ``config.json``,
else from the published configs of :data:`leaf.estimate.MODELS`, else it is
"unknown". Samples are counted from a local data file (its lines, capped by
``limit``); a hub dataset without ``limit`` is counted as 1,000 samples, said
so, so that every figure reads "per 1,000 samples" as in docs/scaling.md.
Tokens per sample come from the student's tokenizer when it is a local folder,
else characters / 4 of a local file, else the 512 of docs/scaling.md; the line
says which. FLOPs, memory per device and time per device are the arithmetic of
docs/scaling.md (:mod:`leaf.estimate`), printed with the numbers that went in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leaf.estimate import (
    GB,
    GPUS,
    MODELS,
    Gpu,
    activation_bytes,
    decode_tokens_per_s,
    flops_detection,
    flops_forward,
    flops_training,
    kv_bytes_per_token,
    layer_params,
    param_count,
    stage_time,
    training_bytes_per_gpu,
    weights_bytes,
)
from leaf.recipe.stages import SAMPLES_KINDS, accelerate_config

ASSUMED_SAMPLES = 1000
ASSUMED_TOKENS = 512  #: tokens of a rendered sample (docs/scaling.md: 128 prompt + 384 response)
RESPONSE_SHARE = 0.75  #: share of a sample's tokens that are response (loss) tokens
MFU = 0.4
OVERHEAD = 3 * GB  #: CUDA context and allocator slack per GPU (docs/scaling.md)
#: Published test sizes of the benchmarks (others: unknown until downloaded).
BENCHMARK_SIZES = {"gsm8k": 1319, "math500": 500, "humaneval": 164, "humaneval-plus": 164}


@dataclass
class Model:
    ref: str
    config: dict[str, Any] | None
    source: str

    @property
    def params(self) -> int | None:
        if self.config is None:
            return None
        try:
            return param_count(self.config)
        except (KeyError, TypeError, ValueError):
            return None


def model_info(ref: str | None) -> Model | None:
    """A model's config without its weights: a local config.json, a published one, or unknown."""
    if not ref:
        return None
    from leaf.gguf import cached

    local = Path(cached(ref) or ref) / "config.json"  # a converted .gguf source's config; none read before conversion
    if local.is_file():
        try:
            return Model(ref, json.loads(local.read_text(encoding="utf-8")), f"{local}")
        except (OSError, json.JSONDecodeError):
            return Model(ref, None, f"unreadable {local}")
    if ref in MODELS:
        return Model(ref, MODELS[ref], "published config (leaf.estimate.MODELS)")
    return Model(ref, None, "unknown (not a local folder, not in leaf.estimate.MODELS)")


@dataclass
class Data:
    """Samples and tokens per sample flowing out of a stage; ``how`` says where the numbers come from."""

    samples: int
    tokens: float
    how_samples: str
    how_tokens: str
    upper: bool = False  #: samples is an upper bound


@dataclass
class StageEstimate:
    name: str
    kind: str
    lines: list[tuple[str, str]] = field(default_factory=list)  #: (label, text)
    numbers: dict[str, Any] = field(default_factory=dict)  #: for tests and tools
    fits: bool | None = None


def _n(x: float) -> str:
    return f"{x:,.0f}"


def _p(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M"


def _gb(b: float) -> str:
    return f"{b / GB:.1f} GB" if b >= 0.1 * GB else f"{b / 2**20:.1f} MiB"


def _t(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s" if s >= 1 else f"{s:.2f} s"
    if s < 7200:
        return f"{s:.0f} s ({s / 60:.1f} min)"
    return f"{s:.0f} s ({s / 3600:.1f} h)"


def _e(x: float) -> str:
    return f"{x:.3g}"


def _dtype(value: str | None, default: str = "bfloat16") -> str:
    return default if value in (None, "auto") else str(value)


# -- data -------------------------------------------------------------------------------------


def _local_file(spec: str) -> Path | None:
    path = Path(spec.split("=", 1)[1] if "=" in spec else spec)
    return path if path.is_file() else None


def _texts(path: Path, limit: int | None, cap: int = 2000) -> tuple[int, list[str]]:
    """Lines of a local JSONL file (up to ``limit``) and the texts of the first ``cap`` of them."""
    n, texts = 0, []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            if limit is not None and n >= limit:
                break
            n += 1
            if len(texts) < cap:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                parts = [rec.get(k) for k in ("instruction", "response", "problem", "solution", "question")]
                texts.append("\n".join(p for p in parts if isinstance(p, str)))
    return n, texts


def _tokens(texts: list[str], tokenizer: str | None) -> tuple[float, str]:
    if not texts:
        return ASSUMED_TOKENS, "assumed, docs/scaling.md"
    if tokenizer and Path(tokenizer).is_dir() and any((Path(tokenizer) / f).exists()
                                                      for f in ("tokenizer.json", "tokenizer_config.json")):
        try:
            from leaf.models import load_tokenizer

            tok = load_tokenizer(tokenizer)
            counts = [len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
            return sum(counts) / len(counts), f"mean of {len(texts)} samples, {tokenizer}'s tokenizer (text only)"
        except Exception as exc:  # noqa: BLE001 - fall back to characters, say why
            reason = f" (tokenizer failed: {type(exc).__name__})"
    else:
        reason = " (no local tokenizer)"
    chars = sum(len(t) for t in texts) / len(texts)
    return chars / 4, f"estimated: mean characters {chars:.0f} / 4{reason}"


# -- the estimate -----------------------------------------------------------------------------


class Estimator:
    def __init__(self, plan: Any) -> None:
        self.p = plan
        self.gpu: Gpu = GPUS[plan.gpu]
        self.gpus: int = plan.gpus
        self.data: dict[str, Data] = {}
        self.models: dict[str, Model | None] = {}
        #: output folder of each distill stage -> the student it trains
        self.trained = {str(s.output): str(s.values.get("student")) for s in plan.steps if s.kind.name == "distill"}
        #: a demo-data stage's model folders -> where leaf.demo.models keeps them (they exist once built)
        self.provided: dict[str, tuple[str, Path, dict[str, Any]]] = {}
        #: files a stage writes -> their samples (the demo's test sets, for evaluate)
        self.files: dict[str, int] = {}
        for s in plan.steps:
            if s.kind.name == "demo-data":
                cfg, paths = plan.configs[s.name], s.kind.config_class().paths(s.folder)
                for role in ("teacher", "student"):
                    self.provided[str(paths[role])] = (s.name, cfg.models_root() / role, cfg.model_config(role))

    def model(self, ref: str | None) -> Model | None:
        if str(ref) not in self.models:
            trained = self.trained.get(str(ref))
            provided = self.provided.get(str(ref))
            if provided is not None:  # the demo's model: its config.json in the cache once built
                stage, cached, spec = provided
                base = model_info(str(cached)) if (cached / "config.json").is_file() else None
                self.models[str(ref)] = Model(str(ref), base.config, f"stage {stage!r} copies {cached}") if base \
                    else Model(str(ref), spec, f"the demo's spec, vocabulary at most {spec['vocab_size']}; stage {stage!r} "
                                                     f"trains it into {cached}")
            elif trained is not None:  # a distill stage's output: the student's architecture
                base = model_info(trained)
                self.models[str(ref)] = None if base is None else Model(str(ref), base.config,
                                                                        f"the student's ({trained})")
            else:
                self.models[str(ref)] = model_info(ref)
        return self.models.get(str(ref))

    def fits(self, est: StageEstimate, label: str, nbytes: float, where: str = "") -> str:
        ok = nbytes <= self.gpu.memory
        est.fits = ok if est.fits is None else (est.fits and ok)
        verdict = "fits" if ok else "DOES NOT FIT"
        return f"{label}: {_gb(nbytes)} per device{where} -> {verdict} one {self.gpu.name} ({_gb(self.gpu.memory)})"

    def time(self, flops: float, gpus: int, why: str) -> str:
        seconds = stage_time(flops, gpus=gpus, peak_tflops=self.gpu.peak_tflops, mfu=MFU)
        return (f"{_e(flops)} FLOP / ({gpus} GPU{'s' if gpus > 1 else ''}{why} x {self.gpu.peak_tflops:g}e12 x "
                f"{MFU:.2f}) = {_t(seconds)}")

    def source_data(self, step: Any) -> Data:
        for src in step.sources:
            if src in self.data:
                return self.data[src]
        return Data(ASSUMED_SAMPLES, ASSUMED_TOKENS, f"assumed {ASSUMED_SAMPLES:,} (per 1,000 samples)",
                    "assumed, docs/scaling.md")

    # one method per kind ------------------------------------------------------------------

    def convert(self, step: Any, cfg: Any, est: StageEstimate) -> None:
        local = _local_file(str(cfg.dataset))
        student = self.p.steps and next((s.values.get("student") for s in self.p.steps if s.values.get("student")), None)
        if local is not None:
            n, texts = _texts(local, cfg.limit)
            tokens, how = _tokens(texts, student)
            data = Data(n, tokens, f"{n:,} (lines of {local})", how)
        elif cfg.limit:
            data = Data(cfg.limit, ASSUMED_TOKENS, f"{cfg.limit:,} (limit; hub dataset, not downloaded)",
                        "assumed, docs/scaling.md")
        else:
            data = Data(ASSUMED_SAMPLES, ASSUMED_TOKENS,
                        f"unknown (hub dataset {cfg.dataset}, no limit): figures below are per {ASSUMED_SAMPLES:,}",
                        "assumed, docs/scaling.md")
        self.data[step.name] = data
        est.lines.append(("compute", "CPU (download and conversion)"))

    def demo_data(self, step: Any, cfg: Any, est: StageEstimate) -> None:
        pool, tests = cfg.draw()  # the records themselves: drawn in pure Python, no model needed
        paths = step.kind.config_class().paths(step.folder)
        for split, records in tests.items():
            self.files[str(paths["tests"][split])] = len(records)
        root = cfg.models_root()
        tokenizer = root / "tokenizer"
        texts = ["\n".join((r["instruction"], r["response"])) for r in pool[:2000]]
        tokens, how = _tokens(texts, str(tokenizer) if tokenizer.is_dir() else None)
        self.data[step.name] = Data(len(pool), tokens, f"{len(pool):,} (the demo's pool, seed {cfg.seed})", how)
        est.lines[-1] = ("samples", f"pool {len(pool):,}; tests " + ", ".join(f"{k} {len(v):,}"
                                                                             for k, v in tests.items()))
        est.lines.append(("tokens", f"{tokens:.0f} per sample ({how})"))
        built = (root / "settings.json").is_file()
        est.lines.append(("compute", f"CPU: the demo's models {'are cached in' if built else 'are trained once into'} "
                                     f"{root}" + ("" if built else " (minutes; leaf demo reuses them)")))

    def label(self, step: Any, cfg: Any, est: StageEstimate) -> None:
        data = self.source_data(step)
        self.data[step.name] = data
        self._generation(est, data.samples, data.tokens * (1 - RESPONSE_SHARE), cfg.max_new_tokens, cfg.batch_size,
                         [("teacher", cfg.teacher), ("student", cfg.student)], _dtype(cfg.dtype))

    def _generation(self, est: StageEstimate, samples: int, prompt: float, new: int, batch: int,
                    models: list[tuple[str, str]], dtype: str) -> None:
        total = 0.0
        est.lines.append(("generate", f"up to {_n(samples)} x {new} new tokens per model "
                                    f"= {_n(samples * new)} (prompts ~{prompt:.0f} tokens)"))
        for role, ref in models:
            m = self.model(ref)
            if m is None or m.params is None:
                est.lines.append(("memory", f"{role} {ref}: unknown ({m.source if m else 'not given'})"))
                continue
            assert m.config is not None
            context = int(prompt + new / 2)
            w = weights_bytes(m.params, dtype)
            kv = batch * (prompt + new) * kv_bytes_per_token(m.config, dtype)
            est.lines.append(("memory", self.fits(est, f"{role} {_p(m.params)} on one device: weights {_gb(w)} + KV "
                                                       f"cache {batch} x {prompt + new:.0f} tokens {_gb(kv)}", w + kv)))
            tps = decode_tokens_per_s(m.config, batch=batch, context=context, gpu=self.gpu, dtype=dtype)
            seconds = samples * new / tps
            total += seconds
            est.numbers[f"{role}_decode_tokens_per_s"] = tps
            est.lines.append(("time", f"{role}: {_n(samples * new)} tokens / {_n(tps)} tok/s (batch {batch}, "
                                      f"HBM-bound ceiling, one GPU) = {_t(seconds)}"))
        est.numbers["seconds"] = total

    def detect(self, step: Any, cfg: Any, est: StageEstimate) -> None:
        src = self.source_data(step)
        upper = cfg.select == "student-wrong"
        data = Data(src.samples, src.tokens, src.how_samples, src.how_tokens, upper=upper or src.upper)
        self.data[step.name] = data
        if upper:
            est.lines[-1] = ("samples", f"at most {_n(src.samples)} (select: student-wrong, known after labelling); "
                                        f"figures below are for all {_n(src.samples)}")
        T = min(src.tokens, cfg.max_length)
        tokens = src.samples * T
        est.lines.append(("tokens", f"{_n(src.samples)} x {T:.0f} = {_n(tokens)} ({src.how_tokens})"))
        batch_tokens = cfg.max_tokens_per_batch or cfg.batch_size * T
        ckpt = cfg.gradient_checkpointing
        teacher, student = self.model(cfg.teacher), self.model(cfg.student)
        if not (teacher and teacher.params and student and student.params):
            unknown = [m.ref for m in (teacher, student) if m and not m.params]
            est.lines.append(("FLOPs", f"unknown: no config for {', '.join(unknown)}"))
            return
        assert teacher.config is not None and student.config is not None
        nt, ns = teacher.params, student.params
        flops = flops_detection(nt, tokens, checkpointing=ckpt) + flops_detection(ns, tokens, checkpointing=ckpt)
        c = 6 if ckpt else 4
        est.lines.append(("FLOPs", f"{c} x {_p(nt)} x {_n(tokens)} + {c} x {_p(ns)} x {_n(tokens)} = {_e(flops)} "
                                   f"(forward + backward to the input only)"))
        dtype = _dtype(cfg.dtype)
        wt, ws = weights_bytes(nt, dtype), weights_bytes(ns, dtype)
        at = activation_bytes(teacher.config, int(batch_tokens), checkpointing=ckpt, dtype=dtype)
        as_ = activation_bytes(student.config, int(batch_tokens), checkpointing=ckpt, dtype=dtype)
        spread = bool(cfg.teacher_device_map or cfg.max_memory)
        per = f"batch {_n(batch_tokens)} tokens{', checkpointing' if ckpt else ''}"
        if spread:
            g = self.gpus
            est.lines.append(("memory", self.fits(est, f"teacher weights {_gb(wt)} + activations {_gb(at)} ({per}) "
                                                       f"over {g} GPUs, plus the student on GPU 0 ({_gb(ws + as_)})",
                                                  (wt + at) / g + ws + as_, " on GPU 0")))
            gpus, why = 1, " (teacher pipelined: one computes at a time)"
        else:
            est.lines.append(("memory", self.fits(est, f"teacher weights {_gb(wt)} + activations {_gb(at)} + student "
                                                       f"{_gb(ws + as_)} ({per}), all on one device",
                                                  wt + at + ws + as_)))
            if wt > self.gpu.memory:
                est.lines.append(("hint", "set teacher_device_map: auto (and max_memory) to spread the teacher over "
                                          "the node's GPUs"))
            gpus, why = 1, ""
        est.numbers.update(flops=flops, teacher_weights=wt, teacher_params=nt, student_params=ns)
        est.lines.append(("time", self.time(flops, gpus, why)))
        est.numbers["seconds"] = stage_time(flops, gpus=gpus, peak_tflops=self.gpu.peak_tflops, mfu=MFU)

    def prune(self, step: Any, cfg: Any, est: StageEstimate) -> None:
        src = self._detect_data(step)
        self.data[step.name] = Data(src.samples, src.tokens, "", "")
        est.lines.append(("records", f"about {_n(src.samples)} counterfactuals (1 per analysed sample assumed, as "
                                     "docs/scaling.md; span pruning gives one per flagged span)"))
        if cfg.verify:
            self._generation(est, src.samples, src.tokens * (1 - RESPONSE_SHARE), cfg.max_new_tokens, cfg.batch_size,
                             [("teacher", cfg.teacher or ""), ("student", cfg.student or "")], _dtype(cfg.dtype))
        else:
            est.lines.append(("compute", "CPU, seconds (string edits)"))

    def distractors(self, step: Any, cfg: Any, est: StageEstimate) -> None:
        from leaf.data.distractors import SAMPLE_SPLITS, draw, split_file

        drawn = draw(cfg)  # the records themselves, as the stage writes them
        records = {split: [r for recs in drawn.values() for r in recs[split]] for split in SAMPLE_SPLITS}
        for split, recs in records.items():
            self.files[str(step.folder / split_file(split))] = len(recs)
        chosen = records[step.split]
        student = next((s.values.get("student") for s in self.p.steps if s.values.get("student")), None)
        tokens, how = _tokens(["\n".join((r["instruction"], r["response"])) for r in chosen], student)
        self.data[step.name] = Data(len(chosen), tokens, f"{len(chosen):,} ({step.split} split, "
                                                         f"{len(drawn)} families, seed {cfg.seed})", how)
        est.lines[-1] = ("samples", ", ".join(f"{k} {len(v):,}" for k, v in records.items())
                         + f"; later stages read {step.split}")
        est.lines.append(("tokens", f"{tokens:.0f} per sample ({how})"))
        est.lines.append(("compute", "CPU, seconds"))

    def _detect_data(self, step: Any) -> Data:
        for src in step.sources:
            if src in self.data:
                return self.data[src]
        return Data(ASSUMED_SAMPLES, ASSUMED_TOKENS, "assumed", "assumed")

    def _examples(self, step: Any, cfg: Any) -> tuple[int, int, float]:
        """(originals, counterfactuals, tokens per example) a distill / cache-teacher step reads."""
        kinds = {s.name: s.kind.name for s in self.p.steps}
        originals = [self.data[s] for s in step.sources if kinds.get(s) in SAMPLES_KINDS and s in self.data]
        cfs = [self.data[s] for s in step.sources if kinds.get(s) == "prune" and s in self.data]
        n_o = sum(d.samples for d in originals) or ASSUMED_SAMPLES
        n_c = sum(d.samples for d in cfs) if cfg.counterfactuals else 0
        tokens = (sum(d.samples * d.tokens for d in originals) / n_o) if originals else ASSUMED_TOKENS
        return n_o, n_c, min(tokens, cfg.max_length)

    def distill(self, step: Any, cfg: Any, est: StageEstimate) -> None:
        n_o, n_c, T = self._examples(step, cfg)
        eff = cfg.batch_size * cfg.grad_accum * self.gpus
        examples = n_o + n_c
        if cfg.max_steps and cfg.max_steps > 0:
            seen = cfg.max_steps * eff
            how = f"{cfg.max_steps} steps x effective batch {eff}"
        else:
            seen = examples * cfg.epochs
            how = f"{cfg.epochs:g} epochs x {_n(examples)} examples"
        est.lines[-1] = ("samples", f"{_n(n_o)} originals + {_n(n_c)} counterfactuals (lambda {cfg.lam:g}); "
                                    f"effective batch {cfg.batch_size} x {cfg.grad_accum} x {self.gpus} GPUs = {eff}")
        tokens = seen * T
        est.lines.append(("tokens", f"{how} x {T:.0f} tokens = {_n(tokens)}"))
        student = self.model(cfg.student)
        teacher = None if cfg.teacher_cache else self.model(cfg.teacher)
        if not (student and student.params) or (not cfg.teacher_cache and not (teacher and teacher.params)):
            est.lines.append(("FLOPs", "unknown: a model's config is not known"))
            return
        assert student.config is not None
        ns, ckpt = student.params, cfg.gradient_checkpointing
        nt = teacher.params if teacher and teacher.params else 0
        c = 8 if ckpt else 6
        flops = flops_training(ns, tokens, checkpointing=ckpt) + (flops_forward(nt, tokens) if nt else 0)
        est.lines.append(("FLOPs", (f"(2 x {_p(nt)} teacher + " if nt else "(") + f"{c} x {_p(ns)} student) x "
                                   f"{_n(tokens)} = {_e(flops)}"))
        acc = accelerate_config(step, self.p.gpus)
        sharded = "zero3" in acc or "fsdp" in acc
        micro = int(cfg.batch_size * T)
        mem = training_bytes_per_gpu(student.config, tokens_per_gpu=micro, gpus=self.gpus, sharded=sharded,
                                     checkpointing=ckpt, loss_rows=int(micro * RESPONSE_SHARE),
                                     chunk_rows=cfg.kl_chunk_size or 1024)
        parts = [f"student states 16 B x {_p(ns)}{f' / {self.gpus}' if sharded else ''} {_gb(mem['states'])}",
                 f"activations ({cfg.batch_size} x {T:.0f} tokens{', checkpointing' if ckpt else ''}) "
                 f"{_gb(mem['activations'])}", f"logits {_gb(mem['logits'])}"]
        total = mem["total"] + OVERHEAD
        if nt and teacher and teacher.config is not None:
            wt = weights_bytes(nt, _dtype(cfg.teacher_dtype))
            if sharded:
                gathered = 3 * layer_params(teacher.config) * 2
                total += wt / self.gpus + gathered
                parts.append(f"teacher {_gb(wt)} / {self.gpus} + ~3 layers in flight {_gb(gathered)}")
            else:
                total += wt
                parts.append(f"teacher {_gb(wt)} whole on every GPU ({Path(acc).name} does not shard it)")
        parts.append(f"context {_gb(OVERHEAD)}")
        est.lines.append(("memory", self.fits(est, " + ".join(parts), total, f" ({Path(acc).name})")))
        est.lines.append(("time", self.time(flops, self.gpus, f" ({Path(acc).stem})")))
        est.numbers.update(flops=flops, memory_per_gpu=total, effective_batch=eff,
                           seconds=stage_time(flops, gpus=self.gpus, peak_tflops=self.gpu.peak_tflops, mfu=MFU))

    def cache_teacher(self, step: Any, cfg: Any, est: StageEstimate) -> None:
        n_o, n_c, T = self._examples(step, cfg)
        tokens = (n_o + n_c) * T
        teacher = self.model(cfg.teacher)
        est.lines.append(("tokens", f"({_n(n_o)} + {_n(n_c)}) examples x {T:.0f} = {_n(tokens)}"))
        if not (teacher and teacher.params):
            est.lines.append(("FLOPs", "unknown: the teacher's config is not known"))
            return
        flops = flops_forward(teacher.params, tokens)
        est.lines.append(("FLOPs", f"2 x {_p(teacher.params)} x {_n(tokens)} = {_e(flops)}"))
        w = weights_bytes(teacher.params, _dtype(cfg.dtype))
        spread = bool(cfg.device_map or cfg.max_memory)
        est.lines.append(("memory", self.fits(est, f"teacher weights {_gb(w)}" + (f" over {self.gpus} GPUs" if spread
                                                                                 else " on one device"),
                                              w / self.gpus if spread else w)))
        disk = (n_o + n_c) * T * RESPONSE_SHARE * cfg.top_k * (8 if cfg.store_dtype == "float32" else 6)
        est.lines.append(("disk", f"~{_gb(disk)} ({cfg.top_k} log-probs + ids per loss token)"))
        est.lines.append(("time", self.time(flops, 1, " (pipeline)" if spread else "")))

    def evaluate(self, step: Any, cfg: Any, est: StageEstimate) -> None:
        from leaf.data.benchmarks import BENCHMARKS

        m = self.model(cfg.model)
        for spec in cfg.benchmark:
            name = spec.split("=", 1)[0]
            bench = BENCHMARKS.get(name)
            local = _local_file(spec)
            n: int | None
            if local is not None:
                n = _texts(local, cfg.limit)[0]
            elif spec in self.files:  # written by an earlier stage (the demo's test sets)
                n = min(self.files[spec], cfg.limit) if cfg.limit else self.files[spec]
            else:
                n = BENCHMARK_SIZES.get(name)
                n = min(n, cfg.limit) if n is not None and cfg.limit else (n or cfg.limit)
            new = cfg.max_new_tokens or (bench.max_new_tokens if bench else 1024)
            if n is None or m is None or m.params is None:
                est.lines.append((name, f"{'unknown' if n is None else _n(n)} samples x up to {new} new tokens"
                                        + ("" if m and m.params else "; model size unknown")))
                continue
            assert m.config is not None
            dtype = _dtype(cfg.dtype)
            tps = decode_tokens_per_s(m.config, batch=cfg.batch_size, context=256 + new // 2, gpu=self.gpu,
                                      dtype=dtype)
            w = weights_bytes(m.params, dtype)
            est.lines.append((name, f"{_n(n)} samples x up to {new} new tokens / {_n(tps)} tok/s = "
                                    f"{_t(n * new / tps)}; " + self.fits(est, f"{_p(m.params)} weights", w)))

    def analyze(self, step: Any, cfg: Any, est: StageEstimate) -> None:
        src = self._detect_data(step)
        n = min(src.samples, cfg.max_samples) if cfg.max_samples else src.samples
        T = min(src.tokens, cfg.max_length)
        for ref, label in zip(cfg.model, cfg.label or cfg.model):
            m = self.model(ref)
            if m is None or m.params is None or m.config is None:
                est.lines.append((str(label), "model size unknown"))
                continue
            flops = flops_forward(m.params, n * T)
            heads, layers = int(m.config["num_attention_heads"]), int(m.config["num_hidden_layers"])
            att = layers * heads * T * T * 2 if cfg.collect == "output_attentions" else heads * T * T * 4
            w = weights_bytes(m.params, _dtype(cfg.dtype))
            est.lines.append((str(label), f"{_n(n)} samples x {T:.0f} tokens: {_e(flops)} FLOP; "
                                          + self.fits(est, f"weights {_gb(w)} + attention maps {_gb(att)}", w + att)))

    def report(self, step: Any, cfg: Any, est: StageEstimate) -> None:
        est.lines.append(("compute", "CPU, seconds"))

    # --------------------------------------------------------------------------------------

    def stage(self, step: Any) -> StageEstimate:
        cfg = self.p.configs[step.name]
        est = StageEstimate(step.name, step.kind.name)
        reads = [f"{k} {step.values[k]}" for k in ("dataset", "data", "detections", "counterfactuals",
                                                       "teacher_cache", "samples") if step.values.get(k)]
        if step.kind.name in ("evaluate", "analyze"):
            models = cfg.model if isinstance(cfg.model, list) else [cfg.model]
            reads.insert(0, "model " + ", ".join(map(str, models)))
        elif step.kind.name == "report":
            reads = [f"the outputs of {', '.join(step.sources)} (linked into {step.folder})"]
        est.lines.append(("reads", "; ".join(reads) or "-"))
        est.lines.append(("writes", str(step.output) + ("/" if not step.kind.output else "")))
        src = self.source_data(step) if step.kind.name in ("label", "detect") else None
        est.lines.append(("samples", src.how_samples if src else ""))
        getattr(self, step.kind.name.replace("-", "_"))(step, cfg, est)
        if step.kind.name == "convert":
            d = self.data[step.name]
            est.lines[-2] = ("samples", d.how_samples)
            est.lines.insert(-1, ("tokens", f"{d.tokens:.0f} per sample ({d.how_tokens})"))
        if src and step.kind.name == "label":
            est.lines.insert(3, ("tokens", f"{src.tokens:.0f} per sample ({src.how_tokens})"))
        est.lines = [(k, v) for k, v in est.lines if v]
        return est


def estimate_plan(plan: Any) -> list[StageEstimate]:
    """The estimate of every stage of a resolved plan (numbers in ``StageEstimate.numbers``)."""
    est = Estimator(plan)
    return [est.stage(step) for step in plan.steps]


def dry_run(plan: Any) -> str:
    """The text ``leaf run RECIPE.yaml --dry-run`` prints."""
    estimator = Estimator(plan)
    gpu = estimator.gpu
    out = [f"dry run of {plan.recipe}: run folder {plan.run}; nothing is loaded or written",
           f"cluster: {plan.gpus} x {gpu.name} ({_gb(gpu.memory)}, {gpu.peak_tflops:g} TFLOP/s bf16 peak); times at "
           f"{MFU:.0%} MFU, generation at 60 % of HBM bandwidth (leaf.estimate, docs/scaling.md)"]
    refs = []
    for step in plan.steps:
        for key in ("teacher", "student"):
            ref = step.values.get(key)
            if ref and ref not in refs:
                refs.append(ref)
    for ref in refs:
        m = estimator.model(ref)
        if m is not None:
            size = (f"{_p(m.params)} parameters, {_gb(weights_bytes(m.params, 'bfloat16'))} in bf16"
                    if m.params else "size unknown")
            out.append(f"model {ref}: {size} ({m.source})")
    selected = {s.name for s in plan.selected}
    width = 8
    verdicts = []
    for step in plan.steps:
        e = estimator.stage(step)
        if step.name not in selected:
            continue
        out.append("")
        out.append(f"[{step.index + 1}/{len(plan.steps)}] {step.name} (leaf {step.kind.command})")
        for label, text in e.lines:
            out.append(f"  {label:<{width}} {text}")
        if e.fits is False:
            verdicts.append(step.name)
    out.append("")
    if verdicts:
        out.append(f"DOES NOT FIT one {gpu.name}: {', '.join(verdicts)} (see the memory lines above)")
    else:
        out.append("every stage with known sizes fits")
    return "\n".join(out)
