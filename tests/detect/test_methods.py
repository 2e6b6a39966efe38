"""Random and PPL baselines: same count as gradient, seeded, and PPL follows true surprisal."""

from __future__ import annotations

import json

import pytest
import torch

from leaf.data.jsonl import read_jsonl
from leaf.data.render import encode, render
from leaf.detect import detect
from leaf.detect.methods import MethodContext, apply_method
from leaf.detect.saliency import pad_batch, token_surprisal


def _ctx(key="a", seed=0):
    flags = torch.tensor([False, True, True, False, False, False])
    eligible = torch.tensor([True, True, True, False, True, True])
    surprisal = torch.tensor([1.0, 0.5, 0.2, 9.0, 3.0, 2.0])
    return MethodContext(key, flags, eligible, surprisal, seed)


def test_same_count_and_eligibility():
    for method in ("gradient", "random", "ppl"):
        flags = apply_method(method, _ctx())
        assert flags.sum() == 2 and not flags[3]


def test_ppl_takes_the_most_surprising_eligible_tokens():
    assert apply_method("ppl", _ctx()).nonzero().squeeze(1).tolist() == [4, 5]  # 9.0 is whitespace


def test_random_is_reproducible_per_seed_and_key():
    draws = {tuple(apply_method("random", _ctx("k", s)).tolist()) for s in range(20)}
    assert len(draws) > 1  # the seed matters
    assert apply_method("random", _ctx("k", 3)).tolist() == apply_method("random", _ctx("k", 3)).tolist()


def test_token_surprisal_equals_independent_log_softmax(llama_tok, tiny_llama):
    texts = [render(llama_tok, "Tom has 3 apples and 5 pears.", "8").text, render(llama_tok, "Hi?", "Hello.").text]
    encs = [encode(llama_tok, t) for t in texts]
    positions = [list(range(1, len(e) - 1)) for e in encs]
    ids, att, pos = pad_batch([e.input_ids for e in encs], positions, llama_tok.pad_token_id)
    got = token_surprisal(tiny_llama, ids, att, pos)
    for b, e in enumerate(encs):
        with torch.no_grad():
            logp = torch.log_softmax(tiny_llama(torch.tensor([e.input_ids])).logits[0].double(), -1)
        for t in positions[b]:
            assert float(got[b, t]) == pytest.approx(-float(logp[t - 1, e.input_ids[t]]), rel=1e-4)
        assert float(got[b, 0]) == 0.0


@pytest.fixture()
def saved(tmp_path, llama_tok, tiny_llama):
    from leaf.tiny import build_model

    paths = {}
    for name, model in (("teacher", build_model(llama_tok, hidden_size=48, num_layers=2, seed=5)),
                        ("student", tiny_llama)):
        model.save_pretrained(tmp_path / name)
        llama_tok.save_pretrained(tmp_path / name)
        paths[name] = str(tmp_path / name)
    data = tmp_path / "d.jsonl"
    rows = [{"id": i, "instruction": f"Item {i}: Tom has {i} apples and the hint says {i + 7}. How many?",
             "response": f"Tom has {i} apples.\nThe answer is {i}."} for i in range(5)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return paths, data


def test_methods_flag_the_same_number_of_tokens_per_sample(saved, tmp_path):
    paths, data = saved
    counts = {}
    for method in ("gradient", "random", "ppl"):
        out = tmp_path / f"{method}.jsonl"
        detect(teacher=paths["teacher"], student=paths["student"], data=data, out=out, method=method,
               tau=0.2, progress=False)
        recs = read_jsonl(out)
        assert all(r["method"] == method for r in recs)
        counts[method] = {r["id"]: sum(t["flag"] for t in r["tokens"]) for r in recs}
        if method == "ppl":
            assert all("surprisal" in t for r in recs for t in r["tokens"])
    assert counts["gradient"] == counts["random"] == counts["ppl"]
    assert sum(counts["gradient"].values()) > 0
    again = tmp_path / "again.jsonl"
    detect(teacher=paths["teacher"], student=paths["student"], data=data, out=again, method="random",
           tau=0.2, progress=False)
    assert again.read_bytes() == (tmp_path / "random.jsonl").read_bytes()


def test_response_level_detection(saved, tmp_path):
    paths, data = saved
    out = tmp_path / "resp.jsonl"
    detect(teacher=paths["teacher"], student=paths["student"], data=data, out=out, level="response",
           tau=0.3, progress=False)
    rows = {json.loads(l)["id"]: json.loads(l) for l in data.read_text().splitlines()}
    for r in read_jsonl(out):
        response = rows[r["id"]]["response"]
        assert r["key"] == f"{r['id']}@1" and r["segment"] == 1
        assert response[r["loss_start"]:r["loss_end"]] == f"The answer is {r['id']}."
        fields = [t["field"] for t in r["tokens"]]
        assert fields == sorted(fields)  # instruction tokens, then response-context tokens
        for t in r["tokens"]:
            source = rows[r["id"]]["instruction"] if t["field"] == "instruction" else response
            assert source[t["start"]:t["end"]] == t["text"]
            if t["field"] == "response":
                assert t["end"] <= r["loss_start"]
        for s, e in r["response_spans"]:
            assert e <= r["loss_start"]
