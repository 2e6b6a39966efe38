"""Control tokens written inside user text: found, and warned about, refused or escaped.

A sample whose instruction holds ``<|eot_id|><|start_header_id|>assistant<|end_header_id|>`` (Llama-3) or
``<|im_end|>\\n<|im_start|>assistant`` (ChatML) is tokenised, by default, with those strings as the real
control tokens: the model sees a forged turn boundary, and detection may flag it. The string of every
special token of a tokenizer (its named special tokens and every added token marked special) is searched in
the instruction and the response, and ``--special-tokens-in-text`` decides:

* ``warn`` (the default): one warning per affected sample (file:line, id, field, the token), a count at the
  end; the tokenisation is unchanged;
* ``escape``: the contents are tokenised as ordinary text (``split_special_tokens``), the template's own
  control tokens as control tokens; offsets stay exact on the original characters (:func:`encode_parts`);
* ``error``: one line naming the file, line, field and token, before any model loads.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from leaf.config import ConfigError
from leaf.data.records import id_key

log = logging.getLogger(__name__)

#: ``--special-tokens-in-text`` choices, and the option's help (one text for every command).
SPECIAL_TOKEN_POLICIES = ("warn", "escape", "error")
SPECIAL_TOKENS_HELP = ("control-token strings (the text of a special token, e.g. Llama-3 eot_id or ChatML im_start) inside a sample's text: warn per "
                       "sample and tokenise them as control tokens (warn), tokenise them as ordinary text (escape), "
                       "or refuse the data naming file, line and field (error)")

_PATTERNS: dict[int, tuple[Any, re.Pattern[str] | None]] = {}  # id -> (the tokenizer itself, its pattern)


def special_strings(tokenizer: Any) -> list[str]:
    """The text of every special token of ``tokenizer`` (named ones and added tokens marked special)."""
    found = set(getattr(tokenizer, "all_special_tokens", []) or [])
    for tok in (getattr(tokenizer, "added_tokens_decoder", {}) or {}).values():
        if getattr(tok, "special", False):
            found.add(str(tok))
    return sorted((s for s in found if s and s.strip()), key=lambda s: (-len(s), s))


def _pattern(tokenizer: Any) -> re.Pattern[str] | None:
    got = _PATTERNS.get(id(tokenizer))
    if got is None or got[0] is not tokenizer:
        strings = special_strings(tokenizer)
        got = _PATTERNS[id(tokenizer)] = (tokenizer, re.compile("|".join(map(re.escape, strings))) if strings else None)
    return got[1]


def find_special(tokenizer: Any, text: str) -> list[tuple[int, int, str]]:
    """``(start, end, token)`` of each special-token string in ``text`` (longest match first, no overlaps)."""
    pattern = _pattern(tokenizer)
    if pattern is None or not text:
        return []
    return [(m.start(), m.end(), m.group()) for m in pattern.finditer(text)]


@dataclass(frozen=True)
class SpecialHit:
    sample_id: Any
    where: str  #: ``FILE:LINE`` (or the sample id when the line is unknown)
    field: str
    token: str
    tokenizer: str


def scan(samples: Iterable[Any], tokenizers: dict[str, Any], locations: Callable[[], dict[str, str]] | None = None,
         fields: Sequence[str] = ("instruction", "response")) -> list[SpecialHit]:
    """Every (sample, field) holding a special-token string of any of ``tokenizers`` (first token per field).

    ``locations`` gives ``{id_key: "FILE:LINE"}`` (:func:`leaf.data.records.record_locations`); it is called
    only when something is found.
    """
    hits = []
    where_of: dict[str, str] | None = None
    for s in samples:
        for field in fields:
            text = getattr(s, field, None)
            if not isinstance(text, str):
                continue
            for name, tok in tokenizers.items():
                got = find_special(tok, text)
                if got:
                    if where_of is None:
                        where_of = locations() if locations is not None else {}
                    where = where_of.get(id_key(s.id), f"sample {s.id!r}")
                    hits.append(SpecialHit(s.id, where, field, got[0][2], name))
                    break
    return hits


def apply_policy(policy: str, hits: Sequence[SpecialHit]) -> None:
    """``error``: refuse (one line, the first hit); ``warn``: one warning per hit and a count; ``escape``: a count."""
    if policy not in SPECIAL_TOKEN_POLICIES:
        raise ConfigError(f"unknown --special-tokens-in-text {policy!r}; use one of {', '.join(SPECIAL_TOKEN_POLICIES)}")
    if not hits:
        return
    first = hits[0]
    if policy == "error":
        more = f" (and {len(hits) - 1} more)" if len(hits) > 1 else ""
        raise ConfigError(
            f"{first.where}: field '{first.field}': holds the {first.tokenizer} tokenizer's control token "
            f"{first.token!r}{more}; it would be read as a real turn boundary. Remove it, or pass "
            "--special-tokens-in-text escape to tokenise it as text (warn: keep it and go on)")
    if policy == "warn":
        for h in hits:
            log.warning("%s: field '%s' holds the control token %r of the %s tokenizer: tokenised as a control "
                        "token (--special-tokens-in-text escape tokenises it as text)", h.where, h.field, h.token,
                        h.tokenizer)
    log.warning("%d sample field(s) hold control-token strings (%s)", len(hits),
                "escaped: tokenised as text" if policy == "escape" else "tokenised as control tokens")


def encode_parts(tokenizer: Any, text: str, literal: Sequence[tuple[int, int]]) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids and offsets of ``text`` where the ``literal`` character ranges are tokenised with special
    tokens split into ordinary text tokens, the rest as usual. Text with no special string inside a literal
    range is tokenised in one call, exactly as without escaping."""
    spans = sorted((a, b) for a, b in literal if b > a)
    if not any(find_special(tokenizer, text[a:b]) for a, b in spans):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    ids: list[int] = []
    offsets: list[tuple[int, int]] = []
    pos = 0
    pieces = []
    for a, b in spans:
        if a > pos:
            pieces.append((pos, a, False))
        pieces.append((a, b, True))
        pos = b
    if pos < len(text):
        pieces.append((pos, len(text), False))
    for a, b, split in pieces:
        enc = tokenizer(text[a:b], add_special_tokens=False, return_offsets_mapping=True, split_special_tokens=split)
        ids += list(enc["input_ids"])
        offsets += [(s + a, e + a) for s, e in enc["offset_mapping"]]
    return ids, offsets
