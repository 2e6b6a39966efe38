"""Greedy decoding and final-answer accuracy for the demo's tiny models.

Kept apart on purpose: ``leaf.evaluate.generation.generate`` (same signature
for the arguments used here) can replace :func:`generate` one for one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from leaf.demo.tasks import final_answer


def generate(
    model: Any,
    tokenizer: Any,
    instructions: Sequence[str],
    *,
    max_new_tokens: int = 48,
    batch_size: int = 64,
) -> list[str]:
    """Greedy completions of ``instructions`` (chat template, left padding), special tokens dropped."""
    import torch

    from leaf.data.render import render_prompt

    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    outputs: list[str] = []
    try:
        for i in range(0, len(instructions), batch_size):
            prompts = [render_prompt(tokenizer, text) for text in instructions[i : i + batch_size]]
            batch = tokenizer(prompts, add_special_tokens=False, padding=True, return_tensors="pt")
            with torch.no_grad():
                out = model.generate(
                    **batch,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id,
                )
            new = out[:, batch["input_ids"].shape[1] :]
            outputs.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = side
    return outputs


def accuracy(model: Any, tokenizer: Any, records: Sequence[dict[str, Any]], **kwargs: Any) -> float:
    """Share of records whose greedy completion ends in ``The answer is <answer>.``."""
    if not records:
        return float("nan")
    outputs = generate(model, tokenizer, [r["instruction"] for r in records], **kwargs)
    return sum(final_answer(o) == str(r["answer"]) for o, r in zip(outputs, records)) / len(records)
