"""The evaluation set of a distillation: samples held out by --eval-split plus --eval-data / --eval-counterfactuals."""

from __future__ import annotations

from typing import Any

from leaf.data.records import DataError
from leaf.distill.config import DistillConfig

#: The held-out sample groups of --eval-split (ids of the original samples), for the record.
HELDOUT_FILE = "eval_heldout.json"


def eval_split(config: DistillConfig, tokenizer: Any, all_examples: list[Any], teacher_tokenizer: Any = None) -> tuple[list[Any], list[Any], list[int], list[Any]]:
    """``(training examples, evaluation examples, their ids, the examples --eval-split held out)``.

    The ids of held-out examples are their positions in ``all_examples`` (the teacher cache's collator looks
    them up there); --eval-data / --eval-counterfactuals examples follow. Any of those equal to a training
    example (same key, or the same tokens) is refused: evaluation is on samples never trained on.
    """
    from leaf.distill.data import load_examples, split_heldout

    train_pos, held_pos = split_heldout(all_examples, config.eval_split, config.seed)
    train = [all_examples[i] for i in train_pos]
    heldout = [all_examples[i] for i in held_pos]
    eval_examples, eval_ids = list(heldout), list(held_pos)
    if config.eval_data is not None or config.eval_counterfactuals is not None:
        extra = load_examples(tokenizer, config.eval_data, config.eval_counterfactuals, include_eos=config.include_eos,
                              max_length=config.max_length, special_tokens=config.special_tokens_in_text,
                              teacher_tokenizer=teacher_tokenizer)
        keys = {e.key for e in train}
        tokens = {tuple(e.input_ids) for e in train}
        clash = [e.key for e in extra if e.key in keys or tuple(e.input_ids) in tokens]
        if clash:
            where = config.eval_data if config.eval_data is not None else config.eval_counterfactuals
            raise DataError([(f"{where}: {len(clash)} evaluation example(s) are also training examples (same id "
                              f"or same text), e.g. {', '.join(clash[:3])}; evaluation must be on held-out samples")])
        eval_ids += range(len(all_examples), len(all_examples) + len(extra))
        eval_examples += extra
    return train, eval_examples, eval_ids, heldout
