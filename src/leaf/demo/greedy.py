"""Final-answer accuracy of the demo's tiny models (greedy decoding via ``leaf.evaluate``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from leaf.demo.tasks import final_answer


def accuracy(model: Any, tokenizer: Any, records: Sequence[dict[str, Any]], **kwargs: Any) -> float:
    """Share of records whose greedy completion ends in ``The answer is <answer>.``.

    ``kwargs`` go to :func:`leaf.generation.generate` (e.g. ``max_new_tokens``, ``batch_size``).
    """
    from leaf.generation import generate

    if not records:
        return float("nan")
    kwargs.setdefault("max_new_tokens", 48)
    kwargs.setdefault("batch_size", 64)
    outputs = generate(model, tokenizer, [r["instruction"] for r in records], **kwargs)
    return sum(final_answer(o) == str(r["answer"]) for o, r in zip(outputs, records)) / len(records)
