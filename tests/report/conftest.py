"""A run folder of hand-made fixture files, shaped as each stage writes them."""

from __future__ import annotations

import json
import re
import struct
import zlib
from pathlib import Path

import pytest

SAMPLES = [
    {
        "id": "gsm-1",
        "instruction": "Tom has 3 apples and buys 5 more.\nIgnore the hint: 42. How many apples does he have?",
        "response": "3 + 5 = 8. The answer is 8.",
    },
    {
        "id": 2,
        "instruction": "Compute 12 * 4. <script>alert('x')</script> & the key 42 maps to 17.",
        "response": "12 * 4 = 48.",
    },
    {"id": "q3", "instruction": "What is the capital of France? Berlin is a city.", "response": "Paris."},
]
FLAGGED = {"gsm-1": ["hint: 42."], "2": ["<script>alert('x')</script>", "key 42"], "q3": []}


def png(width: int = 4, height: int = 3) -> bytes:
    """A valid RGB PNG written by hand (no imaging library needed)."""
    raw = b"".join(b"\x00" + bytes([200, 30 * y, 90]) * width for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def detection(sample: dict, flagged: list[str]) -> dict:
    text = sample["instruction"]
    spans = []
    for f in flagged:
        start = text.index(f)
        spans.append([start, start + len(f)])
    tokens = []
    for k, m in enumerate(re.finditer(r"\S+", text)):
        s, e = m.span()
        flag = any(s < b and e > a for a, b in spans)
        g_t = 0.1 + (k % 5) * 0.2
        g_s = 0.9 if flag else 0.05 * (k % 7)
        tokens.append(
            {"text": m.group(), "start": s, "end": e, "g_teacher": g_t, "g_student": g_s,
             "score": 0.02 if flag else 0.3 + 0.05 * (k % 10), "flag": flag}
        )
    return {"id": sample["id"], "level": "instruction", "method": "gradient", "tokens": tokens, "spans": spans,
            "loss_teacher": 0.5, "loss_student": 1.5, "truncated": 0}


def write_run(root: Path, *, parts=("detections", "counterfactuals", "training", "eval", "analysis")) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if "detections" in parts:
        with (root / "detections.jsonl").open("w") as fh:
            for s in SAMPLES:
                fh.write(json.dumps(detection(s, FLAGGED[str(s["id"])])) + "\n")
        (root / "detections.jsonl.meta.json").write_text(json.dumps({"settings": {"tau": 0.1, "method": "gradient"}}))
    if "counterfactuals" in parts:
        with (root / "counterfactuals.jsonl").open("w") as fh:
            for s in SAMPLES:
                for n, f in enumerate(FLAGGED[str(s["id"])]):
                    start = s["instruction"].index(f)
                    pruned = s["instruction"][:start] + s["instruction"][start + len(f):]
                    fh.write(json.dumps({
                        "id": f"{s['id']}-{n}", "source_id": s["id"], "instruction": pruned,
                        "response": s["response"], "removed": [{"start": start, "end": start + len(f), "text": f}],
                        "strategy": "span", "level": "instruction", "method": "gradient", "intervention": "delete",
                        "loss_start": None, "verified": n == 0,
                    }) + "\n")
    if "training" in parts:
        for name, scale in (("train", 1.0), ("train-kd", 1.3)):
            (root / name).mkdir()
            with (root / name / "metrics.jsonl").open("w") as fh:
                for step in range(1, 21):
                    kd, cd = scale * 2.0 / step ** 0.5, scale * 1.5 / step ** 0.5
                    fh.write(json.dumps({"step": step, "epoch": step / 10, "loss": 0.5 * kd + 0.5 * cd,
                                         "kd_loss": kd, "cd_loss": cd, "lr": 1e-5 * min(1, step / 5),
                                         "tokens_per_s": 1234.5}) + "\n")
            (root / name / "leaf_config.json").write_text(json.dumps({"lam": 0.5, "temperature": 1.0}))
    if "eval" in parts:
        (root / "eval").mkdir()
        evals = {
            "pre": {"gsm8k": (45, 100), "math500": (24, 100)},
            "leaf": {"gsm8k": (58, 100), "math500": (35, 100), "humaneval": (64, 164)},
        }
        for model, benches in evals.items():
            (root / "eval" / f"{model}.json").write_text(json.dumps({
                "model": f"student-{model}",
                "benchmarks": {b: {"accuracy": c / t, "correct": c, "total": t, "task": "math"}
                               for b, (c, t) in benches.items()},
                "records": [],
            }))
    if "analysis" in parts:
        (root / "analysis").mkdir()
        models = []
        for label, span in (("student", 0.21), ("student-leaf", 0.12)):
            models.append({
                "label": label, "model": f"/models/{label}", "num_layers": 2, "num_heads": 4,
                "summary": {"samples": 3, "skipped": {}, "share_on_span": span, "share_on_rest": 0.5 - span,
                            "share_on_template": 0.5, "span_density_ratio": 1.5, "span_token_fraction": 0.2,
                            "per_layer": {"share_on_span": [span - 0.01, span + 0.01]}},
                "samples": [],
            })
        (root / "analysis" / "attention.json").write_text(json.dumps({"version": 1, "models": models}))
        (root / "analysis" / "attention_layers.png").write_bytes(png())
        (root / "analysis" / "attention_heatmap_0_gsm-1.png").write_bytes(png(6, 2))
    return root


@pytest.fixture
def run_folder(tmp_path):
    return write_run(tmp_path / "run")
