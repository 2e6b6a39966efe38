"""The fixture of the golden prune outputs (tests/prune/fixtures/golden-*.jsonl).

The golden files were written by :func:`run_fixture` with the code of commit
24674ef, before ``--draws`` and ``--resample-from uniform`` existed
(``python tests/prune/golden.py`` rewrites them: only do that on purpose).
One draw (the default) must reproduce them byte for byte.
"""

from __future__ import annotations

import json
from pathlib import Path

from leaf.data.records import Sample
from leaf.detect.prepare import make_view
from leaf.tiny import build_model, build_tokenizer

FIXTURES = Path(__file__).parent / "fixtures"
CORPUS = ["Tom has 3 apples and 5 pears and 7 plums and 9 figs.", "The hint says 12 but the key is 44.",
          "Words like apples, pears, plums, figs; numbers 1 2 3 4 5 6 7 8 9 10 11 12 44."]
SAMPLES = [
    (Sample(id="s", instruction="Tom has 3 apples. The hint says 12, so what is it?", response="The answer is 3.",
            answer="3"), {"3", "12", "apples", ","}),
    (Sample(id="t", instruction="The hint says 44 but Tom has 5 pears and 7 plums.", response="The answer is 12.",
            answer="12"), {"44", "5", "pears", "7"}),
]
CASES = [(i, s) for i in ("delete", "mask", "resample") for s in ("span", "collective")]


def tokenizer():
    return build_tokenizer(CORPUS * 3, style="llama3", vocab_size=300)


def detection(tok, sample: Sample, flagged: set[str]) -> dict:
    """A detection whose tokens are the student's, with the named token texts flagged."""
    view, _ = make_view(tok, sample.instruction, sample.response)
    text = sample.instruction
    tokens = [{"text": text[s:e], "start": s, "end": e, "score": 0.0, "flag": text[s:e].strip() in flagged}
              for s, e in view.offsets]
    spans = [[t["start"] + (len(t["text"]) - len(t["text"].lstrip())), t["end"]] for t in tokens if t["flag"]]
    return {"id": sample.id, "level": "instruction", "method": "gradient", "tokens": tokens, "spans": spans}


def write_inputs(folder: Path) -> tuple[Path, Path, Path]:
    """Samples, detections and a saved tiny student (tokenizer and model) under ``folder``."""
    tok = tokenizer()
    student = folder / "student"
    build_model(tok, hidden_size=32, num_layers=2, seed=3).save_pretrained(student)
    tok.save_pretrained(student)
    data, dets = folder / "data.jsonl", folder / "det.jsonl"
    data.write_text("".join(json.dumps(s.to_json()) + "\n" for s, _ in SAMPLES))
    dets.write_text("".join(json.dumps(detection(tok, s, f)) + "\n" for s, f in SAMPLES))
    return data, dets, student


def run_fixture(folder: Path, intervention: str, strategy: str, **options) -> Path:
    """``leaf prune`` of the fixture inputs (written by :func:`write_inputs` into ``folder``)."""
    from leaf.prune import prune

    out = folder / f"{intervention}-{strategy}.jsonl"
    prune(data=folder / "data.jsonl", detections=folder / "det.jsonl", out=out, intervention=intervention,
          strategy=strategy, student=str(folder / "student"), device="cpu", **options)
    return out


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_inputs(folder)
        FIXTURES.mkdir(exist_ok=True)
        for intervention, strategy in CASES:
            out = run_fixture(folder, intervention, strategy)
            (FIXTURES / f"golden-{intervention}-{strategy}.jsonl").write_bytes(out.read_bytes())
