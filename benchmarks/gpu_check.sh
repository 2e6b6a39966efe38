#!/usr/bin/env bash
# GPU check: leaf's detection, distillation and shape benchmarks in bf16 with SDPA attention on one CUDA GPU.
#
#   bash benchmarks/gpu_check.sh [--peak-tflops N] [--out DIR] [--dry-run]
#
# Prints, per benchmark, tokens/s, achieved TFLOP/s and its share of the chip's dense bf16 peak
# (H100/H200 989, A100 312 TFLOP/s, from torch.cuda.get_device_name via leaf.estimate.gpu_for; any
# other GPU: give --peak-tflops), and peak GPU memory (torch.cuda.max_memory_allocated). Raw results:
# DIR/gpu_{detect,distill,shapes,batching}.json (default benchmarks/results). Budget: each benchmark is capped at
# 200 s (about 6 minutes in all on one H200, estimated; the caps bound it at 14).
# --dry-run prints the commands and checks every benchmark's arguments (`--dry-run` of each script),
# which works without a GPU. PYTHON (default: python) picks the interpreter.
set -euo pipefail

cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=false
OUT=benchmarks/results
PEAK=""
DRY=0
CAP=200

while [ $# -gt 0 ]; do
  case "$1" in
    --peak-tflops) PEAK="${2:?--peak-tflops needs a number}"; shift 2 ;;
    --out) OUT="${2:?--out needs a folder}"; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (use --peak-tflops N, --out DIR, --dry-run)" >&2; exit 2 ;;
  esac
done

NAMES=(detect distill shapes batching)
# Llama-3.2-1B's shape (1.24B parameters, vocab 128,256), 64 samples of ~1,000 tokens, batches 1/8/16
CMD_detect="benchmarks/bench_detect.py --device cuda --dtype bfloat16 --config gpu --json $OUT/gpu_detect.json"
# teacher 2048 x 16 layers (~1.1B), student 1024 x 8 (~0.17B), vocab 32,768; bf16 autocast; live teacher and top-64 cache
CMD_distill="benchmarks/bench_distill.py --arms leaf-live leaf-cache --precision bf16 --teacher-size 2048:16 --student-size 1024:8 --samples 128 --batch 16 --steps 6 --repeats 1 --threads 8 --out $OUT/gpu_distill.json"
# the published vocabularies (128k-262k) on cut models: memory of chunked heads vs full logits
CMD_shapes="benchmarks/bench_shapes.py --device cuda --dtype bfloat16 --json $OUT/gpu_shapes.json"
# mixed 64-2,048-token samples: sorted padded batches (SDPA) vs packed rows (flex attention's block mask), detection and training steps
CMD_batching="benchmarks/bench_batching.py --device cuda --packed-attention flex_attention --no-memory --json $OUT/gpu_batching.json"

if [ "$DRY" = 1 ]; then
  for name in "${NAMES[@]}"; do
    cmd="CMD_$name"
    echo "would run: timeout $CAP $PY ${!cmd}"
    # shellcheck disable=SC2086
    $PY ${!cmd} --dry-run
  done
  echo "peak: ${PEAK:-detected from torch.cuda.get_device_name() (H100/H200 989, A100 312 TFLOP/s)}"
  exit 0
fi

if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check.sh: no CUDA GPU visible (torch.cuda.is_available() is False); --dry-run checks the commands only" >&2
  exit 1
fi
GPU_NAME="$($PY -c "import torch; print(torch.cuda.get_device_name())")"
if [ -z "$PEAK" ]; then
  PEAK="$($PY -c "
import torch
from leaf.estimate import gpu_for
g = gpu_for(torch.cuda.get_device_name())
print(g.peak_tflops if g else '')")"
fi
if [ -z "$PEAK" ]; then
  echo "gpu_check.sh: unknown GPU '$GPU_NAME': give its dense bf16 peak with --peak-tflops N" >&2
  exit 2
fi
mkdir -p "$OUT"
echo "GPU: $GPU_NAME, bf16 dense peak $PEAK TFLOP/s; results in $OUT"
nvidia-smi --query-gpu=name,memory.total,memory.used,utilization.gpu --format=csv 2>/dev/null || true

STATUS=0
for name in "${NAMES[@]}"; do
  cmd="CMD_$name"
  echo
  echo "== $name: $PY ${!cmd}"
  start=$(date +%s)
  # shellcheck disable=SC2086
  if ! timeout "$CAP" $PY ${!cmd}; then
    echo "gpu_check.sh: $name failed or passed its $CAP s cap" >&2
    STATUS=1
  fi
  echo "($name took $(( $(date +%s) - start )) s)"
done

echo
echo "== summary ($GPU_NAME, peak $PEAK TFLOP/s bf16)"
$PY - "$OUT" "$PEAK" <<'EOF'
import json
import sys
from pathlib import Path

out, peak = Path(sys.argv[1]), float(sys.argv[2])


def load(name):
    p = out / f"gpu_{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def row(what, tokens_s, tflops, mib):
    share = f"{tflops / peak:.1%}" if tflops is not None else "-"
    tf = f"{tflops:.1f}" if tflops is not None else "-"
    tok = f"{tokens_s:,.0f}" if tokens_s is not None else "-"
    mem = f"{mib:,.0f}" if mib is not None else "-"
    print(f"| {what} | {tok} | {tf} | {share} | {mem} |")


print("| benchmark | tokens/s | TFLOP/s | share of peak | peak MiB |")
print("|---|---|---|---|---|")
for r in load("detect") or []:
    best = max(r["leaf"], key=lambda x: x["samples_per_s"])
    row(f"detect {r['config']} ({r['params_millions']:.0f}M, batch {best['batch_size']})", r["tokens_per_s_best"],
        r["leaf_gflops_best"] / 1000, r.get("cuda_max_memory_allocated_mib"))
    print(f"|   (bf16 8192^2 matmul measured: {r['matmul_gflops'] / 1000:.0f} TFLOP/s; naive {r['naive']['samples_per_s']:.1f} "
          f"vs leaf {best['samples_per_s']:.1f} samples/s) | | | | |")
distill = load("distill")
for arm, r in ((distill or {}).get("results") or {}).items():
    if "error" in r:
        print(f"| distill {arm} | failed: {r['error']} | | | |")
        continue
    row(f"distill {arm} (student {r.get('student_params', 0) / 1e6:.0f}M, teacher {r.get('teacher_params', 0) / 1e6:.0f}M)",
        r["tokens_per_s"], r.get("achieved_tflops"), r.get("cuda_peak_mib"))
shapes = load("shapes")
if shapes:
    after = shapes["ratios"]["after"]
    mem = shapes["peak_mib"]
    row("shapes (a) mixed batch, after", None, None, mem.get("a_mixed_batch/after"))
    row("shapes (b) vocab 262k, after", None, None, mem.get("b_vocab_262144/after"))
    row("shapes (c) distill step, after", after.get("c_distill_tokens_per_s"), None, mem.get("c_distill_step/after"))
    print("shape ratios (after):", json.dumps(after))
batching = load("batching")
if batching:
    t = batching["throughput"]
    print(f"batching: detection samples/s fixed {t['fixed']['samples_per_s']}, max-tokens {t['max-tokens']['samples_per_s']}, "
          f"packed {t['packed']['samples_per_s']} (packed / fixed {t['ratio_packed_vs_fixed']}x, goal 1.5x); training "
          "steps packed speed vs padded: " + ", ".join(f"{k} {v['ratio_packed_speed_vs_padded']}x"
                                                      for k, v in batching["training_steps"].items()))
EOF
exit $STATUS
