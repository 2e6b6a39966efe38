"""leaf.detect.prepare: fitting a sample to max_length for every tokenizer, with the offsets kept exact."""

from __future__ import annotations

from leaf.data.records import Sample
from leaf.detect.prepare import Prepared, Skipped, prepare

INSTR = "Ignore this long preamble about apples and pears. Tom has 3 apples. How many apples does Tom have?"
SAMPLE = Sample(id="s", instruction=INSTR, response="Tom has 3 apples. The answer is 3.")


def test_fits_without_cutting_when_short(llama_tok):
    p = prepare(SAMPLE, {"student": llama_tok}, max_length=512)
    assert isinstance(p, Prepared) and p.cut == 0 and p.key == "s"
    v = p.views["student"]
    # every scored token's range is a piece of the instruction, in order, and the targets follow them
    assert all(0 <= s < e <= len(INSTR) for s, e in v.offsets)
    assert [s for s, _ in v.offsets] == sorted(s for s, _ in v.offsets)
    assert min(v.targets) > max(v.scored)


def test_left_truncation_cuts_the_instruction_only_and_keeps_original_offsets(llama_tok):
    full = prepare(SAMPLE, {"student": llama_tok}, max_length=512)
    assert isinstance(full, Prepared)
    budget = len(full.views["student"].input_ids) - 5
    cut = prepare(SAMPLE, {"student": llama_tok}, max_length=budget)
    assert isinstance(cut, Prepared) and cut.cut > 0
    v = cut.views["student"]
    assert len(v.input_ids) <= budget
    assert all(s >= cut.cut for s, _ in v.offsets)  # offsets index the original instruction
    assert len(v.targets) == len(full.views["student"].targets)  # the response is never cut


def test_skip_policy_and_a_response_that_cannot_fit(llama_tok):
    skipped = prepare(SAMPLE, {"student": llama_tok}, max_length=10, truncation="skip")
    assert isinstance(skipped, Skipped) and "max_length 10" in skipped.reason
    hopeless = prepare(SAMPLE, {"student": llama_tok}, max_length=10)
    assert isinstance(hopeless, Skipped) and "the response alone needs" in hopeless.reason


def test_response_level_scores_the_earlier_segment(llama_tok):
    sample = Sample(id="r", instruction="Add 2 and 3.", response="First, 2 + 3 = 5.\n\nSo the answer is 5.")
    start = sample.response.index("So")
    p = prepare(sample, {"student": llama_tok}, max_length=512, loss_start=start, key="r@1")
    assert isinstance(p, Prepared) and p.key == "r@1"
    v = p.views["student"]
    fields = {v.field(i) for i in range(len(v.scored))}
    assert fields == {"instruction", "response"}
    assert all(e <= start for i, (s, e) in enumerate(v.offsets) if v.field(i) == "response")
