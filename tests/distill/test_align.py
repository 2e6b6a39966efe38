"""Alignment groups of two tokenizations and the shared vocabulary: hand-made offsets and real tokenizers."""

from __future__ import annotations

from pathlib import Path

import pytest

from leaf.distill.align import Group, align_groups, aligned_shares, shared_vocab, token_bytes

REAL = Path.home() / ".cache" / "leaf" / "tokenizers"


def test_groups_on_hand_made_offsets():
    # "hello world": student [hel][lo][ world], teacher [hello][ wor][ld]
    s = [(0, 3), (3, 5), (5, 11)]
    t = [(0, 5), (5, 9), (9, 11)]
    groups = align_groups(s, [0, 1, 2], t, [0, 1, 2], 0, 11)
    assert groups == [Group(0, 5, (0, 1), (0,)), Group(5, 11, (2,), (1, 2))]
    assert aligned_shares(groups) == (0, 3)
    same = align_groups(s, [0, 1, 2], s, [0, 1, 2], 0, 11)
    assert all(g.one_to_one for g in same) and aligned_shares(same) == (3, 0)


def test_a_side_without_tokens_joins_the_next_group_and_the_text_is_tiled():
    # student leaves character 3 uncovered (NFC-style): [ab][c] _ [de]; teacher [a][bc][d][e] with [d] = (3, 4)
    s = [(0, 2), (2, 3), (4, 5)]
    t = [(0, 1), (1, 3), (3, 4), (4, 5)]
    groups = align_groups(s, [0, 1, 2], t, [0, 1, 2, 3], 0, 5)
    assert [(g.start, g.end) for g in groups] == [(0, 3), (3, 5)]
    assert groups[1] == Group(3, 5, (2,), (2, 3))


def test_tokens_straddling_the_region_are_clipped():
    s = [(0, 4), (4, 8)]  # token 0 starts in the template, before the region [2, 8)
    t = [(2, 8)]
    assert align_groups(s, [0, 1], t, [0], 2, 8) == [Group(2, 8, (0, 1), (0,))]


def _load(name):
    if not (REAL / name / "tokenizer.json").exists():
        pytest.skip(f"no {name} tokenizer in {REAL}")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(REAL / name)


TEXTS = [
    "Tom has 3 apples and buys 5 more, so he has 3 + 5 = 8 apples.",
    "def add(a, b):\n    return a + b  # the sum\n\n\tprint(add(2, 40))",
    "Über café naïve — unicode: 日本語のテキスト, emoji 🙂🚀, and e\u0301 (combining accent).",
    "   leading spaces, trailing spaces   ",
]


@pytest.mark.parametrize("pair", [("llama3_1", "qwen3"), ("llama3_1", "gemma3"), ("qwen3", "gemma3")])
def test_real_pairs_tile_the_text_and_every_token_is_in_one_group(pair):
    a, b = (_load(n) for n in pair)
    for text in TEXTS:
        ea = a(text, add_special_tokens=False, return_offsets_mapping=True)
        eb = b(text, add_special_tokens=False, return_offsets_mapping=True)
        ta = [i for i, (s, e) in enumerate(ea["offset_mapping"]) if e > s]
        tb = [i for i, (s, e) in enumerate(eb["offset_mapping"]) if e > s]
        groups = align_groups(ea["offset_mapping"], ta, eb["offset_mapping"], tb, 0, len(text))
        assert groups[0].start == 0 and groups[-1].end == len(text)
        assert all(x.end == y.start for x, y in zip(groups, groups[1:]))  # no character lost or doubled
        assert sorted(i for g in groups for i in g.student) == ta
        assert sorted(i for g in groups for i in g.teacher) == tb
        assert all(g.student and g.teacher for g in groups)
        one, merged = aligned_shares(groups)
        assert one + merged == len(ta) and one > 0


def test_real_shared_vocabulary_spells_the_same_bytes():
    a, b = _load("llama3_1"), _load("gemma3")
    m = shared_vocab(a, b)
    ba, bb = token_bytes(a), token_bytes(b)
    assert len(m) > 50_000
    assert all(ba[i] == bb[j] for i, j in zip(m.student, m.teacher))
    assert len(set(m.student)) == len(m) == len(set(m.teacher))
    # " the" is one token in both and is matched
    i, j = a.convert_tokens_to_ids("Ġthe"), b.convert_tokens_to_ids("▁the")
    assert dict(zip(m.student, m.teacher))[i] == j


@pytest.mark.parametrize("pair", [("llama3_1", "qwen3"), ("llama3_1", "gemma3"), ("qwen3", "gemma3")])
def test_the_tokens_each_tokenizer_emits_are_the_shared_ones(pair):
    """Where a spelling exists on both sides, the id each tokenizer emits for it is the matched one: not a
    byte-fallback twin (Gemma-3's digits and '.') nor a non-special added token left out ('\\n')."""
    a, b = (_load(n) for n in pair)
    m = shared_vocab(a, b)
    ba, bb = token_bytes(a), token_bytes(b)
    spelled_a, spelled_b = set(ba.values()), set(bb.values())
    shared_a, shared_b = set(m.student), set(m.teacher)
    text = "\n".join(TEXTS) + "\nTom has 13 + 7 = 20 stickers.\n#### 20\n"
    emitted_a, emitted_b = a.encode(text, add_special_tokens=False), b.encode(text, add_special_tokens=False)
    missing_a = [a.convert_ids_to_tokens(i) for i in emitted_a if ba[i] in spelled_b and i not in shared_a]
    missing_b = [b.convert_ids_to_tokens(i) for i in emitted_b if bb[i] in spelled_a and i not in shared_b]
    assert not missing_a and not missing_b, (missing_a[:10], missing_b[:10])
    for ch in "0123456789.\n":  # each side's own token for these is matched to the other's
        i, j = a.encode(ch, add_special_tokens=False), b.encode(ch, add_special_tokens=False)
        if len(i) == 1 and len(j) == 1:
            assert dict(zip(m.student, m.teacher)).get(i[0]) == j[0], repr(ch)
