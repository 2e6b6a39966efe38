"""How large a top k a teacher with another tokenizer needs: the cached aligned loss against the live teacher's.

A cross-tokenizer teacher cache (``leaf cache-teacher --cross-tokenizer auto``)
keeps the teacher's top k at each of its own tokens; training compares each
aligned group over the shared ids among those k, the group's text and a tail
(:class:`leaf.distill.aligned.TopKRows`). This benchmark runs the real models
once over N examples (originals and counterfactuals, each example on its own:
no padding), then computes the gold loss and its gradient with respect to the
student's logits from the live teacher logits and from their top k, for
several k (``--method uld``: the sorted-probability distance instead, whose
cached form lumps the teacher's sorted entries after the k-th), and reports
per k:

* ``loss``: the cached loss relative to the live one (the tail hides the
  divergence at the shared ids outside the top k, so it is lower);
* ``grad cos`` / ``grad norm``: cosine and norm ratio of the gradient to the
  live one (what training follows);
* ``tail``: mean teacher mass outside the top k at the teacher's loss tokens;
* ``bytes/token``: the shard bytes per cached token at that k (float32
  log-probs, int32 ids beyond 65,536 ids, the actual token's log-prob).

    python benchmarks/bench_cross_cache.py --data samples.jsonl --counterfactuals cf.jsonl --n 40 \
        --json benchmarks/results/bench_cross_cache_cpu.json

Defaults: Gemma-3-270M teacher, SmolLM2-135M-Instruct student, as
``scripts/fetch_models.sh`` converts them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

MODELS = Path(os.path.expanduser("~/.cache/leaf/models"))


def loss_and_grad(z_s: torch.Tensor, teacher, batch: dict, method: str) -> tuple[float, torch.Tensor]:
    from leaf.distill.aligned import aligned_loss

    z = z_s.clone().requires_grad_(True)
    parts = aligned_loss(z, teacher, batch["groups"], batch["teacher_groups"], batch["targets"],
                         batch["teacher_targets"], batch["weights"], batch["shared_s"], batch["shared_t"],
                         method=method, chunk_rows=256)
    parts.loss.backward()
    return float(parts.loss.detach()), z.grad.flatten()


def rows_of(model, ids: list[int], labels: list[int], vocab: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits at the positions predicting each loss token, and those tokens."""
    y = torch.tensor(labels[1:])
    keep = (y != -100).nonzero().squeeze(-1)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, :-1]
    z = logits[keep].float()
    return (z[:, :vocab] if vocab else z), y[keep]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--student", default=str(MODELS / "smollm2-135m-instruct"))
    ap.add_argument("--teacher", default=str(MODELS / "gemma3-270m"))
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--counterfactuals", type=Path)
    ap.add_argument("--n", type=int, default=40, help="examples (originals first, then counterfactuals)")
    ap.add_argument("--ks", type=int, nargs="+", default=[8, 16, 64, 256, 1024, 4096])
    ap.add_argument("--method", choices=("gold", "uld"), default="gold")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from leaf.distill.aligned import TopKRows
    from leaf.distill.data import load_examples, model_vocab_size
    from leaf.distill.run import _shared_ids
    from leaf.models import load_model, load_tokenizer

    s_tok, t_tok = load_tokenizer(args.student), load_tokenizer(args.teacher)
    examples = load_examples(s_tok, args.data, args.counterfactuals, teacher_tokenizer=t_tok)
    originals = [e for e in examples if not e.counterfactual]
    cfs = [e for e in examples if e.counterfactual]
    picked = (originals[: (args.n + 1) // 2] + cfs[: args.n // 2])[: args.n]
    student, teacher = load_model(args.student), load_model(args.teacher)
    vocab_s = model_vocab_size(student)
    _, shared_s, shared_t = _shared_ids("gold", s_tok, t_tok, vocab_s, model_vocab_size(teacher))
    t0 = time.perf_counter()
    zs, zt, ys, yt, gs, gt = [], [], [], [], [], []
    offset = 0
    for ex in picked:
        z, y = rows_of(student, ex.input_ids, ex.labels, vocab_s)
        w, v = rows_of(teacher, ex.teacher_input_ids, ex.teacher_labels)
        zs.append(z), ys.append(y), zt.append(w), yt.append(v)
        gs.append(torch.tensor(ex.groups) + offset), gt.append(torch.tensor(ex.teacher_groups) + offset)
        offset += max(ex.groups) + 1
    forward_s = time.perf_counter() - t0
    z_s, z_t = torch.cat(zs), torch.cat(zt)
    batch = dict(groups=torch.cat(gs), teacher_groups=torch.cat(gt), targets=torch.cat(ys),
                 teacher_targets=torch.cat(yt), weights=torch.full((offset,), 1.0 / len(torch.cat(ys))),
                 shared_s=shared_s, shared_t=shared_t)
    live_loss, live_grad = loss_and_grad(z_s, z_t, batch, args.method)
    lp = torch.log_softmax(z_t, -1)
    actual = lp.gather(-1, batch["teacher_targets"].unsqueeze(-1)).squeeze(-1)
    id_bytes = 2 if lp.shape[-1] <= 1 << 16 else 4
    rows = []
    for k in args.ks:
        top = lp.topk(min(k, lp.shape[-1]), dim=-1)
        loss, grad = loss_and_grad(z_s, TopKRows(top.values, top.indices, actual), batch, args.method)
        rows.append({
            "k": k, "loss_ratio": loss / live_loss,
            "grad_cos": float(torch.nn.functional.cosine_similarity(grad, live_grad, dim=0)),
            "grad_norm_ratio": float(grad.norm() / live_grad.norm()),
            "tail_mass": float((1 - top.values.exp().sum(-1)).clamp(min=0).mean()),
            "bytes_per_token": k * (4 + id_bytes) + 4,
        })
    print(f"{args.method}: {len(picked)} examples, {len(z_s)} student / {len(z_t)} teacher loss tokens, {offset} groups; "
          f"shared vocabulary {len(shared_s)}; live loss {live_loss:.4f} (forwards {forward_s:.0f} s)")
    print("| k | loss (cached / live) | grad cos | grad norm (cached / live) | teacher mass outside the top k | bytes/token |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['k']:,} | {r['loss_ratio']:.3f} | {r['grad_cos']:.4f} | {r['grad_norm_ratio']:.3f} | "
              f"{r['tail_mass']:.4f} | {r['bytes_per_token']:,} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "method": args.method, "student": args.student, "teacher": args.teacher, "examples": len(picked), "live_loss": live_loss,
            "student_tokens": len(z_s), "teacher_tokens": len(z_t), "groups": offset,
            "shared_vocab": len(shared_s), "rows": rows, "machine": platform.processor() or platform.machine(),
            "torch": torch.__version__,
        }, indent=2) + "\n")


if __name__ == "__main__":
    main()
