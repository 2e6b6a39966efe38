"""On-policy and mixed responses (``--student-responses``): the student answers, the teacher scores its answer.

Before each optimiser step, every example of the step's micro-batches is drawn on-policy with probability
``fraction`` (GKD's lambda): the draw is a hash of (seed, step, example), so a resumed run draws the same
examples at the same steps. A drawn example's reference response is replaced by the response the *current*
student (the weights of the step about to run) generates for its prompt:

* an original sample: the student answers its instruction; both models then see that instruction with the
  student's response (GKD's on-policy term);
* a counterfactual record: by default (``--student-prompt source``) the student answers the *original*
  instruction of its source sample, the one holding the distractor, and both models see the pruned instruction
  with that response: the teacher, which never sees the distractor, scores every token of what the distracted
  student actually writes. ``own`` answers the pruned instruction itself.

Records whose loss covers only part of the response (``loss_start``, response-level pruning) keep their
reference response: their pruning is in it. The example is rebuilt exactly as the data loader builds one
(:func:`leaf.distill.data.build_example` / ``build_pair_example``: loss tokens, end of turn, truncation, the
teacher's own rendering across tokenizers), so the loss counts of the step (and the two terms' means) are those
of the rewritten batches.

Generation uses the model being trained, through transformers (:func:`leaf.generation.generate`), in eval mode
without gradients; its random numbers come from a forked generator seeded per step, micro-batch and process, so
the training's own random state is untouched. Under FSDP / ZeRO-3 every process takes part in every generation
(``synced_gpus``), one with nothing drawn generates one row and discards it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

#: Values of ``--student-prompt``: what a drawn counterfactual record's student answers.
PROMPTS = ("source", "own")


def _unit(*parts: object) -> float:
    """A number in [0, 1) fixed by ``parts`` (the same on every machine and process)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def drawn(seed: int, step: int, index: int, fraction: float) -> bool:
    """Is example ``index`` (its position among all examples of the run) on-policy at optimiser step ``step``?"""
    return fraction >= 1.0 or (fraction > 0.0 and _unit("draw", seed, step, index) < fraction)


def generation_seed(seed: int, step: int, micro: int, rank: int) -> int:
    """The seed of one generation call (step, micro-batch and process)."""
    return int(_unit("generate", seed, step, micro, rank) * 2**31)


@dataclass
class OnPolicy:
    """Rewrites a step's micro-batches with the student's responses (see the module docstring).

    ``examples``: every example of the run, indexed as the items' ``index``; ``build(example, response)``
    returns the rebuilt example (or None when nothing of it carries a loss); ``collate`` pads items.
    """

    fraction: float
    seed: int
    examples: Sequence[Any]
    build: Callable[[Any, str], Any]
    collate: Callable[[list[dict[str, Any]]], dict[str, Any]]
    tokenizer: Any
    max_new_tokens: int = 512
    temperature: float = 1.0
    escape_special: bool = False
    seconds: float = 0.0  #: time spent generating since the last :meth:`take_counts`
    generated: int = 0  #: responses generated since the last :meth:`take_counts`
    tokens: int = 0  #: tokens of those responses (the student's tokenizer)
    total_seconds: float = 0.0  #: over the whole run (this process)
    total_generated: int = 0

    def rewrite(self, model: Any, batches: list[dict[str, Any]], step: int, rank: int = 0,
                synced: bool = False) -> list[dict[str, Any]]:
        """The batches with each drawn example's response replaced by the student's own (others unchanged)."""
        out = []
        for micro, batch in enumerate(batches):
            index = [int(i) for i in batch["index"].tolist()]
            chosen = [k for k, i in enumerate(index)
                      if self.examples[i].prompt is not None and drawn(self.seed, step, i, self.fraction)]
            if not chosen and not synced:
                out.append(batch)
                continue
            prompts = [self.examples[index[k]].prompt for k in chosen]
            texts = self._generate(model, prompts or [self.examples[index[0]].instruction or ""],
                                   generation_seed(self.seed, step, micro, rank), synced)
            if not chosen:  # the lockstep row of a sharded model: its time counts, its response does not
                out.append(batch)
                continue
            self.generated += len(texts)
            self.total_generated += len(texts)
            self.tokens += sum(len(self.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
            rebuilt = dict(zip(chosen, texts))
            items = []
            for k, i in enumerate(index):
                ex = self.examples[i]
                if k in rebuilt:
                    new = self.build(ex, rebuilt[k])
                    ex = ex if new is None else new
                items.append(_item(ex, i))
            out.append(self.collate(items))
        return out

    def _generate(self, model: Any, prompts: list[str], seed: int, synced: bool) -> list[str]:
        import torch

        from leaf.generation import generate

        was_training = model.training
        model.eval()
        start = time.perf_counter()
        try:
            with torch.random.fork_rng(devices=_cuda_devices(model)):
                texts = generate(model, self.tokenizer, prompts, max_new_tokens=self.max_new_tokens,
                                 batch_size=len(prompts), do_sample=self.temperature > 0,
                                 temperature=self.temperature or 1.0, seed=seed, escape_special=self.escape_special,
                                 synced_gpus=synced)
        finally:
            model.train(was_training)
        elapsed = time.perf_counter() - start
        self.seconds += elapsed
        self.total_seconds += elapsed
        return texts

    def take_counts(self) -> tuple[float, int, int]:
        """``(seconds, responses, tokens)`` since the last call; resets them."""
        counts = (self.seconds, self.generated, self.tokens)
        self.seconds, self.generated, self.tokens = 0.0, 0, 0
        return counts


def _cuda_devices(model: Any) -> list[int]:
    import torch

    if not torch.cuda.is_available():
        return []
    return sorted({p.device.index for p in model.parameters() if p.device.type == "cuda" and p.device.index is not None})


def _item(ex: Any, index: int) -> dict[str, Any]:
    """The dataset item of an example (:class:`leaf.distill.data.ExampleDataset`'s layout)."""
    from leaf.distill.data import ExampleDataset

    return ExampleDataset([ex], [index])[0]


def example_builder(tokenizer: Any, teacher_tokenizer: Any, *, include_eos: bool, max_length: int | None,
                    escape_special: bool) -> Callable[[Any, str], Any]:
    """``build(example, response)``: the example with ``response`` in place of its reference, built as
    :func:`leaf.distill.data.load_examples` builds every example (the key, source and texts kept)."""
    from leaf.data.records import Sample
    from leaf.distill.data import build_example, build_pair_example

    def build(ex: Any, response: str) -> Any:
        sample = Sample(id=ex.key.split(":", 1)[1], instruction=ex.instruction, response=response)
        kw = dict(counterfactual=ex.counterfactual, include_eos=include_eos, max_length=max_length,
                  source=ex.source, escape_special=escape_special)
        new = (build_example(tokenizer, sample, **kw) if teacher_tokenizer is None
               else build_pair_example(tokenizer, teacher_tokenizer, sample, **kw))
        return None if new is None else replace(new, key=ex.key, instruction=ex.instruction, prompt=ex.prompt)

    return build
