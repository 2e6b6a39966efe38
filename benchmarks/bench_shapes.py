"""Memory and speed at real vocabulary sizes: chunked output heads ("after") vs full logits ("before").

Three published model configurations -- Llama-3.2-1B (vocab 128,256, tied
embeddings, GQA, llama3 rope scaling), Qwen2.5-1.5B (vocab 151,936) and
Gemma-3-1B (vocab 262,144) -- are written below as config dicts (no
downloads) and randomly initialised with their *vocabulary kept* but layers
and hidden size cut to fit a CPU (:data:`CUT`; the script prints the shapes it
uses). Teacher and student have the same shape, different seeds.

Scenarios:

(a) mixed lengths: detection (``embedding_saliency`` of teacher and student)
    of a 70-token sample batched with a 1,460-token one (responses: the last
    half of each), against the 1,460-token sample alone, Llama-3.2 shape
    (and Qwen2.5 shape, "after" only). Goal: batched peak <= 1.3x the
    longest alone.
(b) vocabulary: detection of one sample with a 2,048-token response (128-token
    prompt), Gemma-3 shape at vocab 262,144 vs the same model at 32,000.
    Goal: <= 1.5x.
(c) distillation: one loss step (student forward with gradients, teacher
    forward, hybrid KL, backward) at vocab 128,256 (Llama-3.2 shape) on
    2 x 1,024 response tokens; peak memory increase vs the size of the
    full fp32 logits of those tokens (one model). Goal: <= 0.3x.

"before" is the previous implementation, kept here as reference functions
(:func:`old_embedding_saliency`, :func:`old_distill_step`): logits for every
position in ``[lo, hi)`` of the batch / for all loss positions at once.
"after" is the library (``leaf.detect.saliency``, ``chunked_head_kl``).

Peak memory: RSS above the level at entry, measured in one child process whose
allocator returns freed buffers to the OS (see benchmarks/memory.py); the
model weights exist before the measurement starts and are not counted.
Throughput: one timing each (``--repeats``), in this process, normal allocator.

    OMP_NUM_THREADS=1 python benchmarks/bench_shapes.py --json benchmarks/results/bench_shapes_cpu.json

On a GPU (``--device cuda --dtype bfloat16``, SDPA attention as on CPU): every
tensor is made on the GPU (``torch.set_default_device``), peak memory is
``torch.cuda.max_memory_allocated`` above the allocation at the start of each
run (no child process), and times are taken after ``torch.cuda.synchronize``.
``--dry-run`` checks the arguments and prints the plan without running.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from memory import EXACT_RSS_ENV, PeakMemory, exact_rss_active  # noqa: E402

from leaf.batching import pack  # noqa: E402
from leaf.detect.saliency import embedding_saliency  # noqa: E402
from leaf.heads import final_hidden_states, output_head  # noqa: E402
from leaf.distill.losses import DenseTeacher, chunked_head_kl, distill_loss  # noqa: E402

# ----------------------------------------------------------------------------
# Published configurations (config.json of each model card), then the CPU cut.
# ----------------------------------------------------------------------------

PUBLISHED = {
    "llama-3.2-1b": dict(
        arch="llama", vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=8, head_dim=64, tie_word_embeddings=True, rms_norm_eps=1e-5,
        max_position_embeddings=131072, hidden_act="silu",
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    ),
    "qwen2.5-1.5b": dict(
        arch="qwen2", vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
        num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=True, rms_norm_eps=1e-6,
        max_position_embeddings=32768, hidden_act="silu", use_sliding_window=False,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
    ),
    "gemma-3-1b": dict(
        arch="gemma3", vocab_size=262144, hidden_size=1152, intermediate_size=6912, num_hidden_layers=26,
        num_attention_heads=4, num_key_value_heads=1, head_dim=256, tie_word_embeddings=True, rms_norm_eps=1e-6,
        max_position_embeddings=32768, hidden_activation="gelu_pytorch_tanh", sliding_window=512,
        query_pre_attn_scalar=256, final_logit_softcapping=None, attn_logit_softcapping=None,
        rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
    ),
}

#: What is cut to fit a CPU: layers, width, heads (head_dim, GQA grouping where possible and vocabulary kept).
CUT = {
    "llama-3.2-1b": dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1),
    "qwen2.5-1.5b": dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1),
    "gemma-3-1b": dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=2),
}


def build(name: str, seed: int, vocab: int | None = None) -> torch.nn.Module:
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    cfg = {**PUBLISHED[name], **CUT[name]}
    arch = cfg.pop("arch")
    if vocab:
        cfg["vocab_size"] = vocab
    config_cls, model_cls = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM),
                             "gemma3": (Gemma3TextConfig, Gemma3ForCausalLM)}[arch]
    torch.manual_seed(seed)
    model = model_cls._from_config(config_cls(**cfg), attn_implementation="sdpa")
    return model.to(DTYPE).eval().requires_grad_(False)


def shape_note(name: str) -> str:
    p, c = PUBLISHED[name], CUT[name]
    return (f"{name}: vocab {p['vocab_size']} (kept), hidden {p['hidden_size']}->{c['hidden_size']}, "
            f"layers {p['num_hidden_layers']}->{c['num_hidden_layers']}, intermediate {p['intermediate_size']}->{c['intermediate_size']}, "
            f"heads {p['num_attention_heads']}/{p['num_key_value_heads']}->{c.get('num_attention_heads', p['num_attention_heads'])}"
            f"/{c.get('num_key_value_heads', p['num_key_value_heads'])}")


# ----------------------------------------------------------------------------
# "before": the previous implementations, verbatim in substance.
# ----------------------------------------------------------------------------

OLD_LOSS_CHUNK = 1024


def old_embedding_saliency(model, input_ids, attention_mask, target_mask):  # type: ignore[no-untyped-def]
    """leaf's embedding_saliency before chunked heads: logits at every position in [lo, hi) of the batch."""
    target_mask = target_mask.bool() & attention_mask.bool()
    n_targets = target_mask.sum(1)
    with torch.enable_grad():
        embeds = model.get_input_embeddings()(input_ids).detach().requires_grad_(True)
        predicting = target_mask[:, 1:].any(0).nonzero().squeeze(1)
        lo, hi = int(predicting.min()), int(predicting.max()) + 1
        logits = model(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False,
                       logits_to_keep=torch.arange(lo, hi)).logits
        targets = input_ids[:, lo + 1 : hi + 1]
        mask = target_mask[:, lo + 1 : hi + 1]
        nll_sum = torch.zeros(input_ids.shape[0], dtype=torch.float32)
        for s in range(0, hi - lo, OLD_LOSS_CHUNK):
            chunk = logits[:, s : s + OLD_LOSS_CHUNK].float()
            nll = F.cross_entropy(chunk.transpose(1, 2), targets[:, s : s + OLD_LOSS_CHUNK], reduction="none")
            nll_sum = nll_sum + (nll * mask[:, s : s + OLD_LOSS_CHUNK]).sum(1)
        loss = nll_sum / n_targets
        (grad,) = torch.autograd.grad(loss.sum(), embeds)
    return (grad.float().norm(dim=-1) * attention_mask).detach(), loss.detach()


def old_distill_step(student, teacher, ids, att, keep, w_kl):  # type: ignore[no-untyped-def]
    """DistillTrainer.compute_loss before chunked heads: (N, V) logits of both models, chunked KL, backward."""
    logits = student(input_ids=ids, attention_mask=att, use_cache=False, logits_to_keep=keep).logits
    with torch.no_grad():
        t_logits = teacher(input_ids=ids, attention_mask=att, use_cache=False, logits_to_keep=keep).logits
    n = logits.shape[0]
    rows = torch.arange(n)
    parts = distill_loss(logits, rows, DenseTeacher(t_logits, rows), w_kl, chunk_size=OLD_LOSS_CHUNK)
    parts.loss.backward()
    return parts.loss.detach()


def new_distill_step(student, teacher, ids, att, keep, w_kl):  # type: ignore[no-untyped-def]
    """DistillTrainer.compute_loss now: final hidden states of both models, chunked_head_kl, backward."""
    s_head, t_head = output_head(student), output_head(teacher)
    hidden = final_hidden_states(student, keep, s_head, input_ids=ids, attention_mask=att)
    with torch.no_grad():
        t_hidden = final_hidden_states(teacher, keep, t_head, input_ids=ids, attention_mask=att)
    parts = chunked_head_kl(hidden, s_head, lambda sl: t_head(t_hidden[sl]), w_kl, chunk_size=OLD_LOSS_CHUNK)
    parts.loss.backward()
    return parts.loss.detach()


# ----------------------------------------------------------------------------
# Scenarios.
# ----------------------------------------------------------------------------


def batch(lengths: list[int], responses: list[int], vocab: int, seed: int = 0):  # type: ignore[no-untyped-def]
    g = torch.Generator(device="cpu").manual_seed(seed)
    width = max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    att = torch.zeros(len(lengths), width, dtype=torch.long)
    tgt = torch.zeros(len(lengths), width, dtype=torch.bool)
    for b, (n, r) in enumerate(zip(lengths, responses)):
        ids[b, :n] = torch.randint(3, vocab, (n,), generator=g, device="cpu")
        att[b, :n] = 1
        tgt[b, n - r : n] = True
    return ids, att, tgt


def detect(impl: str, models: tuple, data: tuple) -> None:
    fn = old_embedding_saliency if impl == "before" else embedding_saliency
    for model in models:  # teacher, then student, as `leaf detect` does
        fn(model, *data)


MIXED = dict(model="llama-3.2-1b", lengths=[70, 1460], responses=[35, 730])
VOCAB = dict(model="gemma-3-1b", vocabs=[262144, 32000], length=128 + 2048, response=2048)
DISTILL = dict(model="llama-3.2-1b", lengths=[1025, 1025], response=1024)


def after_only(name: str) -> tuple[str, ...]:
    """The implementations a scenario runs: the library only where no "before" exists or fits."""
    return ("after",) if name.startswith(("a_qwen", "a_packed")) else ("before", "after")


#: Scenarios to run (``--only``): letters a, b, c.
ONLY = "abc"


def scenario_inputs():  # type: ignore[no-untyped-def]
    """Every (name, models, runner) to measure; runner(impl) does the work."""
    out: list = []
    if "a" in ONLY:
        _mixed_inputs(out)
    if "b" in ONLY:
        _vocab_inputs(out)
    if "c" in ONLY:
        _distill_inputs(out)
    return out


def _mixed_inputs(out: list) -> None:
    m = MIXED["model"]
    models = (build(m, 0), build(m, 1))
    vocab = PUBLISHED[m]["vocab_size"]
    mixed = batch(MIXED["lengths"], MIXED["responses"], vocab)
    long_alone = batch(MIXED["lengths"][1:], MIXED["responses"][1:], vocab)
    out.append(("a_mixed_batch", lambda impl, d=mixed, ms=models: detect(impl, ms, d)))
    out.append(("a_longest_alone", lambda impl, d=long_alone, ms=models: detect(impl, ms, d)))
    # the same two samples packed into one row (--packing on): no padding, attention confined to each sample
    packed = packed_mixed(mixed)
    out.append(("a_packed_batch", lambda impl, p=packed, ms=models: [packed_saliency(m, p) for m in ms]))
    q = "qwen2.5-1.5b"  # the same mixed batch at Qwen2.5's vocabulary, "after" only (the "before" would need ~6 GiB more)
    qm = (build(q, 0), build(q, 1))
    qv = PUBLISHED[q]["vocab_size"]
    for tag, d in (("mixed_batch", batch(MIXED["lengths"], MIXED["responses"], qv)),
                   ("longest_alone", batch(MIXED["lengths"][1:], MIXED["responses"][1:], qv))):
        out.append((f"a_qwen_{tag}", lambda impl, d=d, ms=qm: detect(impl, ms, d)))


def packed_mixed(mixed: tuple) -> tuple[dict, torch.Tensor]:
    """The mixed batch's samples end to end in one row (:func:`leaf.batching.pack`) and their target mask."""
    ids, _att, tgt = mixed
    packed = pack([ids[b, :n].tolist() for b, n in enumerate(MIXED["lengths"])])
    return packed, torch.cat([tgt[b, :n] for b, n in enumerate(MIXED["lengths"])]).unsqueeze(0)


def packed_saliency(model, packed: tuple[dict, torch.Tensor]):  # type: ignore[no-untyped-def]
    rows, target = packed
    return embedding_saliency(model, rows["input_ids"], torch.ones_like(rows["input_ids"]), target, packed=rows)


def _vocab_inputs(out: list) -> None:
    for v in VOCAB["vocabs"]:
        gm = (build(VOCAB["model"], 0, v), build(VOCAB["model"], 1, v))
        d = batch([VOCAB["length"]], [VOCAB["response"]], v)
        out.append((f"b_vocab_{v}", lambda impl, d=d, ms=gm: detect(impl, ms, d)))


def _distill_inputs(out: list) -> None:
    dm = DISTILL["model"]
    student, teacher = build(dm, 1).requires_grad_(True).train(), build(dm, 0)
    ids, att, tgt = batch(DISTILL["lengths"], [DISTILL["response"]] * 2, PUBLISHED[dm]["vocab_size"])
    keep = torch.zeros_like(tgt)
    keep[:, :-1] = tgt[:, 1:]
    w_kl = torch.full((int(keep.sum()),), 1.0 / int(keep.sum()))

    def distill_run(impl, s=student, t=teacher):  # type: ignore[no-untyped-def]
        s.zero_grad(set_to_none=True)
        (old_distill_step if impl == "before" else new_distill_step)(s, t, ids, att, keep, w_kl)
        s.zero_grad(set_to_none=True)

    out.append(("c_distill_step", distill_run))


#: Where and in which dtype the models run (``--device`` / ``--dtype``); CPU float32 by default.
DTYPE = torch.float32
CUDA = False


def sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


def cuda_peak_mib(run, impl) -> float:  # type: ignore[no-untyped-def]
    """GPU peak allocated above the allocation at entry, MiB (weights exist before and are not counted)."""
    sync()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    run(impl)
    sync()
    return round((torch.cuda.max_memory_allocated() - base) / 2**20, 1)


def warm_up() -> None:
    """First calls (thread pools, the output-head check) on small inputs, outside any measurement."""
    for name in ("llama-3.2-1b",):
        model = build(name, 0, 512)
        d = batch([12, 8], [4, 3], 512)
        old_embedding_saliency(model, *d)
        embedding_saliency(model, *d)


def memory_child() -> dict:
    assert exact_rss_active(), "run under EXACT_RSS_ENV"
    warm_up()
    got = {}
    for name, run in scenario_inputs():
        for impl in after_only(name):
            with PeakMemory() as mem:
                run(impl)
            got[f"{name}/{impl}"] = round(mem.peak_mib, 1)
            print(name, impl, got[f"{name}/{impl}"], "MiB", file=sys.stderr, flush=True)
    return got


def agreement() -> dict:
    """Relative differences between before and after on the mixed batch (saliency and loss) and the distill loss."""
    m = MIXED["model"]
    model = build(m, 0)
    d = batch(MIXED["lengths"], MIXED["responses"], PUBLISHED[m]["vocab_size"])
    s0, l0 = old_embedding_saliency(model, *d)
    s1, l1 = embedding_saliency(model, *d)
    nz = s0 > 0
    # the packed row against the padded batch: the same saliency per token and loss per sample
    s2, l2 = packed_saliency(model, packed_mixed(d))
    s1_flat = torch.cat([s1[b, :n] for b, n in enumerate(MIXED["lengths"])])
    nz1 = s1_flat > 0
    return {"saliency_max_rel": float(((s1[nz] - s0[nz]).abs() / s0[nz]).max()),
            "loss_max_rel": float(((l1 - l0).abs() / l0).max()),
            "packed_saliency_max_rel": float(((s2[0][nz1] - s1_flat[nz1]).abs() / s1_flat[nz1]).max()),
            "packed_loss_max_rel": float(((l2 - l1).abs() / l1).max())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="model weights' dtype")
    ap.add_argument("--dry-run", action="store_true", help="check the arguments, print the plan, run nothing")
    ap.add_argument("--only", default="abc", help="scenarios to run, e.g. c (default abc)")
    args = ap.parse_args()
    global DTYPE, CUDA, ONLY
    ONLY = args.only
    if not ONLY or set(ONLY) - set("abc"):
        ap.error("--only: letters from abc")
    DTYPE = getattr(torch, args.dtype)
    CUDA = args.device.startswith("cuda")
    if not CUDA and args.device != "cpu":
        ap.error(f"--device {args.device}: use cpu or cuda[:N]")
    if args.dry_run:
        print(f"bench_shapes: device {args.device}, dtype {args.dtype}, sdpa attention, repeats {args.repeats}, "
              f"memory {'torch.cuda.max_memory_allocated' if CUDA else 'RSS in a child process'}, json {args.json}")
        return
    if CUDA:
        if not torch.cuda.is_available():
            ap.error("--device cuda: no CUDA GPU here")
        torch.set_default_device(args.device)
    if args.memory_child:
        print(json.dumps(memory_child()))
        return

    for name in PUBLISHED:
        print("shape:", shape_note(name))
    t0 = time.perf_counter()
    if CUDA:
        warm_up()
        mem = {f"{name}/{impl}": cuda_peak_mib(run, impl) for name, run in scenario_inputs()
               for impl in after_only(name)}
    else:
        proc = subprocess.run([sys.executable, __file__, "--memory-child", "--only", ONLY], env={**os.environ, **EXACT_RSS_ENV},
                              check=True, stdout=subprocess.PIPE, text=True)
        mem = json.loads(proc.stdout.strip().splitlines()[-1])
    t_mem = time.perf_counter() - t0

    times: dict[str, float] = {}
    if not args.skip_timing:
        warm_up()
        for name, run in scenario_inputs():
            for impl in after_only(name):
                best = float("inf")
                for _ in range(args.repeats):
                    sync()
                    t = time.perf_counter()
                    run(impl)
                    sync()
                    best = min(best, time.perf_counter() - t)
                times[f"{name}/{impl}"] = round(best, 3)
                print(f"time {name} {impl}: {best:.2f} s", flush=True)

    full_logits_mib = sum(DISTILL["response"] for _ in DISTILL["lengths"]) * PUBLISHED[DISTILL["model"]]["vocab_size"] * 4 / 2**20
    results: dict = {"shapes": {n: shape_note(n) for n in PUBLISHED}, "peak_mib": mem, "seconds": times,
                     "threads": torch.get_num_threads(), "torch": torch.__version__, "only": ONLY,
                     "agreement": agreement() if "a" in ONLY else None,
                     "device": torch.cuda.get_device_name() if CUDA else "cpu", "dtype": args.dtype,
                     "peak_memory": "cuda max_memory_allocated" if CUDA else "rss"}
    ratios: dict = {}
    for impl in ("before", "after"):
        r = ratios[impl] = {}
        if "a" in ONLY:
            r["a_mixed_vs_longest_alone"] = mem[f"a_mixed_batch/{impl}"] / mem[f"a_longest_alone/{impl}"]
        if "b" in ONLY:
            r["b_vocab262k_vs_32k"] = mem[f"b_vocab_262144/{impl}"] / mem[f"b_vocab_32000/{impl}"]
        if "c" in ONLY:
            r["c_distill_vs_full_fp32_logits"] = mem[f"c_distill_step/{impl}"] / full_logits_mib
        if times and "a" in ONLY:
            r["a_mixed_batch_samples_per_s"] = 2 * 2 / times[f"a_mixed_batch/{impl}"]  # 2 samples x 2 models
        if times and "b" in ONLY:
            r["b_vocab262k_samples_per_s"] = 2 / times[f"b_vocab_262144/{impl}"]
        if times and "c" in ONLY:
            r["c_distill_tokens_per_s"] = 2 * DISTILL["response"] / times[f"c_distill_step/{impl}"]
    if "a" in ONLY:
        ratios["after"]["a_qwen_mixed_vs_longest_alone"] = mem["a_qwen_mixed_batch/after"] / mem["a_qwen_longest_alone/after"]
        ratios["after"]["a_packed_vs_longest_alone"] = mem["a_packed_batch/after"] / mem["a_longest_alone/after"]
        if times:
            ratios["after"]["a_packed_batch_samples_per_s"] = 2 * 2 / times["a_packed_batch/after"]
    results["ratios"] = {k: {m: round(v, 3) for m, v in d.items()} for k, d in ratios.items()}
    results["goals"] = {"a_mixed_vs_longest_alone": 1.3, "b_vocab262k_vs_32k": 1.5, "c_distill_vs_full_fp32_logits": 0.3}
    results["full_fp32_logits_mib_c"] = round(full_logits_mib, 1)
    results["memory_child_seconds"] = round(t_mem, 1)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
