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


def test_a_huge_instruction_is_cut_on_characters_before_tokenising(llama_tok, monkeypatch):
    import leaf.detect.prepare as prep

    longest = []
    real = prep.make_view

    def spy(tok, instruction, *a, **kw):
        longest.append(len(instruction))
        return real(tok, instruction, *a, **kw)

    monkeypatch.setattr(prep, "make_view", spy)
    huge = Sample(id="h", instruction="Tom has 3 apples. " * 20_000 + "How many?", response="3.")
    p = prepare(huge, {"student": llama_tok}, max_length=64)
    assert isinstance(p, Prepared)
    assert max(longest) <= 64 * prep.CHARS_PER_TOKEN  # never tokenised whole (360k characters)
    v = p.views["student"]
    assert len(v.input_ids) <= 64 and p.cut >= len(huge.instruction) - 64 * prep.CHARS_PER_TOKEN
    assert all(s >= p.cut for s, _ in v.offsets) and v.offsets[-1][1] == len(huge.instruction)
    # the token-boundary cut still decides the start: the kept text fills the budget
    assert len(v.input_ids) >= 60
    skipped = prepare(huge, {"student": llama_tok}, max_length=64, truncation="skip")
    assert isinstance(skipped, Skipped) and "characters per token" in skipped.reason


R1_LIKE = (
    "{% for m in messages %}{% if m.role == 'user' %}<|User|>{{ m.content }}"
    "{% else %}{% set c = m.content %}{% if '</think>' in c %}{% set c = c.split('</think>')[-1] %}{% endif %}"
    "<|Assistant|>{{ c }}<|end|>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|Assistant|><think>\n{% endif %}"
)


def test_a_sample_the_template_cannot_render_is_skipped_not_raised(llama_tok):
    import copy

    tok = copy.deepcopy(llama_tok)
    tok.chat_template = R1_LIKE
    sample = Sample(id="t", instruction="What is 2 + 2?", response="I add them.</think>The answer is 4.")
    skipped = prepare(sample, {"student": tok}, max_length=512, render_mode="template")
    assert isinstance(skipped, Skipped) and skipped.reason.startswith("student: ") and "rewrites the response" in skipped.reason
    p = prepare(sample, {"student": tok}, max_length=512)  # auto: prompt-then-response
    assert isinstance(p, Prepared) and p.uncovered == {"student": 0}


def test_uncovered_characters_are_counted_per_model(llama_tok):
    class Gappy:
        """A fast tokenizer whose offsets skip U+0301 (as an NFC normaliser does)."""

        is_fast = True

        def __getattr__(self, name):
            return getattr(llama_tok, name)

        def __call__(self, text, **kw):
            enc = llama_tok(text, **kw)
            offsets = [(s, e) for s, e in enc["offset_mapping"]]
            for i, (s, e) in enumerate(offsets):
                if e > s and text[s:e] == "\u0301":
                    offsets[i] = (s, s)
            return {"input_ids": enc["input_ids"], "offset_mapping": offsets}

    sample = Sample(id="n", instruction="cafe\u0301 and re\u0301sume\u0301 please", response="OK.")
    p = prepare(sample, {"teacher": llama_tok, "student": Gappy()}, max_length=512)
    assert isinstance(p, Prepared)
    assert p.uncovered["teacher"] == 0
    gaps = p.views["student"].uncovered
    assert all(f == "instruction" and sample.instruction[s:e] == "\u0301" * (e - s) for f, s, e in gaps)
    assert p.uncovered["student"] == sample.instruction.count("\u0301")
