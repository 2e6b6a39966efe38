"""Aligning two tokenizations of one response, and the vocabulary two tokenizers share.

Cross-tokenizer distillation compares a teacher and a student that cut the same
text into different tokens. Both are placed on the same coordinates of the response
field (each token's ``[start, end)`` offsets -- UTF-8 bytes in training, :func:`byte_offsets` --
clipped to the loss region):

* :func:`align_groups` cuts the region at every character position where a
  student token *and* a teacher token end -- the minimal common segmentation.
  Each :class:`Group` is a character range with the student tokens and the
  teacher tokens that end inside it; the groups tile the region exactly (no
  character lost or counted twice). A stretch where one side has no token (a
  character one tokenizer leaves uncovered, e.g. a combining accent folded by
  NFC normalisation) is joined to the next group, so every group has at least
  one token on each side.
* :func:`shared_vocab` maps the ids of the tokens both vocabularies spell with
  the same bytes (byte-level BPE ``Ġ`` pieces and SentencePiece ``▁`` pieces
  and ``<0xNN>`` byte-fallback tokens are decoded to bytes first; special
  tokens match by their content), built once per pair.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Span = tuple[int, int]


@dataclass(frozen=True)
class Group:
    """One aligned stretch of text: ``[start, end)`` characters, and the token indices of each side ending in it."""

    start: int
    end: int
    student: tuple[int, ...]
    teacher: tuple[int, ...]

    @property
    def one_to_one(self) -> bool:
        return len(self.student) == 1 and len(self.teacher) == 1


def _clipped_ends(offsets: Sequence[Span], tokens: Sequence[int], lo: int, hi: int) -> list[tuple[int, int]]:
    """``(clipped end, token index)`` of each token, in order; ends clamped into ``[lo, hi]``."""
    return [(min(max(offsets[t][1], lo), hi), t) for t in tokens]


def align_groups(student_offsets: Sequence[Span], student_tokens: Sequence[int], teacher_offsets: Sequence[Span],
                 teacher_tokens: Sequence[int], lo: int, hi: int) -> list[Group]:
    """The minimal common segmentation of ``[lo, hi)`` by two tokenizations.

    ``*_offsets``: character offsets of every token, both in the same coordinates (the response field);
    ``*_tokens``: the indices of the tokens that carry the loss, in order (those overlapping ``[lo, hi)``).
    Returns groups in text order; their ranges tile ``[lo, hi)``; every listed token is in exactly one group.
    """
    if not student_tokens or not teacher_tokens or hi <= lo:
        return []
    s_ends = _clipped_ends(student_offsets, student_tokens, lo, hi)
    t_ends = _clipped_ends(teacher_offsets, teacher_tokens, lo, hi)
    cuts = sorted(({e for e, _ in s_ends} & {e for e, _ in t_ends}) - {lo} | {hi})
    groups: list[Group] = []
    si = ti = 0
    start = lo
    pending_s: list[int] = []
    pending_t: list[int] = []
    for cut in cuts:
        while si < len(s_ends) and (s_ends[si][0] <= cut or cut == hi):
            pending_s.append(s_ends[si][1])
            si += 1
        while ti < len(t_ends) and (t_ends[ti][0] <= cut or cut == hi):
            pending_t.append(t_ends[ti][1])
            ti += 1
        if pending_s and pending_t:  # else: join this stretch to the next group
            groups.append(Group(start, cut, tuple(pending_s), tuple(pending_t)))
            start, pending_s, pending_t = cut, [], []
    if pending_s or pending_t:  # a side empty at the very end: join the stretch to the last group
        if not groups:
            return []
        last = groups.pop()
        groups.append(Group(last.start, hi, last.student + tuple(pending_s), last.teacher + tuple(pending_t)))
    return groups


def byte_offsets(text: str, offsets: Sequence[Span], pieces: Sequence[bytes | None]) -> list[Span]:
    """Character offsets into ``text`` as UTF-8 byte offsets, splitting one character among its byte pieces.

    Byte-level tokenizers can cut one multi-byte character into several tokens that all report the same
    character span; their byte lengths (``pieces``, each token's bytes, None if unknown) separate them, so two
    identical tokenizations align 1:1 everywhere.
    """
    cum = [0]
    for ch in text:
        cum.append(cum[-1] + len(ch.encode()))
    out = [(cum[min(a, len(text))], cum[min(b, len(text))]) for a, b in offsets]
    i = 0
    while i < len(out):
        j = i
        while j + 1 < len(out) and offsets[j + 1] == offsets[i] and offsets[i][1] > offsets[i][0]:
            j += 1
        run = [pieces[k] for k in range(i, j + 1)]
        a, b = out[i]
        if j > i and all(p is not None for p in run) and sum(len(p) for p in run) == b - a:  # type: ignore[arg-type]
            for k, p in zip(range(i, j + 1), run):
                out[k] = (a, a + len(p))  # type: ignore[arg-type]
                a += len(p)  # type: ignore[arg-type]
        i = j + 1
    return out


def aligned_shares(groups: Sequence[Group]) -> tuple[int, int]:
    """``(student tokens in 1:1 groups, student tokens in merged groups)``."""
    one = sum(len(g.student) for g in groups if g.one_to_one)
    return one, sum(len(g.student) for g in groups) - one


# ----------------------------------------------------------------------------
# The shared vocabulary.
# ----------------------------------------------------------------------------


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, inverted: the printable character that stands for each byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def _decoder_kinds(tokenizer: Any) -> set[str]:
    import json

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError(f"{type(tokenizer).__name__} is not a fast tokenizer: the shared vocabulary needs one")
    decoder = json.loads(backend.to_str()).get("decoder") or {}
    kinds, stack = set(), [decoder]
    while stack:
        d = stack.pop()
        kinds.add(d.get("type", ""))
        if d.get("type") == "Replace" and d.get("pattern", {}).get("String") == "▁":
            kinds.add("Metaspace")
        stack += d.get("decoders") or []
    return kinds


def _is_byte_fallback(token: str) -> bool:
    return len(token) == 6 and token.startswith("<0x") and token.endswith(">")


def token_bytes(tokenizer: Any) -> dict[int, bytes]:
    """Each id's spelling as bytes; special tokens as ``b"\\x00special:" + content``.

    An added token that is not special (Gemma-3's ``"\\n"`` and runs of spaces or tabs) is text: spelled by
    its content, as the tokenizer emits it for that text."""
    return _spellings(tokenizer)[0]


def _spellings(tokenizer: Any) -> tuple[dict[int, bytes], set[int]]:
    """:func:`token_bytes`, and the ids of the SentencePiece byte-fallback tokens ``<0xNN>`` among them."""
    kinds = _decoder_kinds(tokenizer)
    byte_level = "ByteLevel" in kinds
    table = _byte_decoder() if byte_level else {}
    added = {int(i): t for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items()}
    out: dict[int, bytes] = {}
    fallback: set[int] = set()
    for token, idx in tokenizer.get_vocab().items():
        if idx in added:
            a = added[idx]
            out[idx] = (b"\x00special:" + a.content.encode()) if a.special else a.content.encode()
        elif byte_level:
            if all(c in table for c in token):
                out[idx] = bytes(table[c] for c in token)
        elif _is_byte_fallback(token):
            out[idx] = bytes([int(token[3:5], 16)])
            fallback.add(idx)
        else:
            out[idx] = (token.replace("▁", " ") if "Metaspace" in kinds else token).encode()
    return out, fallback


@dataclass(frozen=True)
class VocabMap:
    """Ids of the tokens both vocabularies share, in matching order: ``student[i]`` spells ``teacher[i]``."""

    student: tuple[int, ...]
    teacher: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.student)


def shared_vocab(student_tokenizer: Any, teacher_tokenizer: Any, pairs: Sequence[tuple[int, int]] = (),
                 student_limit: int | None = None, teacher_limit: int | None = None) -> VocabMap:
    """The tokens both tokenizers spell with the same bytes, one id per spelling on each side: the one the
    tokenizer emits for that text (a regular token before a byte-fallback ``<0xNN>`` one, which SentencePiece
    uses only for characters it has no token for; else the lowest id).

    ``pairs``: ``(student id, teacher id)`` matched on purpose whatever their spelling (the two templates'
    end-of-turn tokens); ``*_limit``: ids at or above it (rows a model does not have) are left out.
    """
    def first_ids(tok: Any, limit: int | None) -> dict[bytes, int]:
        spelled, fallback = _spellings(tok)
        best: dict[bytes, int] = {}
        for idx, b in sorted(spelled.items(), key=lambda kv: (kv[0] in fallback, kv[0])):
            if (limit is None or idx < limit) and b not in best:
                best[b] = idx
        return best

    s, t = first_ids(student_tokenizer, student_limit), first_ids(teacher_tokenizer, teacher_limit)
    forced_s, forced_t = {a for a, _ in pairs}, {b for _, b in pairs}
    matched = [(s[b], t[b]) for b in s.keys() & t.keys() if s[b] not in forced_s and t[b] not in forced_t]
    matched = sorted(set(matched) | set(pairs))
    return VocabMap(tuple(a for a, _ in matched), tuple(b for _, b in matched))
