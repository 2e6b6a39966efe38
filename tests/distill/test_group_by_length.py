"""--group-by-length: less padding, and with --mix interleave every optimiser step still holds both kinds."""

from __future__ import annotations

import random

from leaf.distill import DistillConfig
from leaf.distill.data import InterleavedSampler
from leaf.distill.arguments import training_arguments


def _data(n=1200, share_cf=0.3, seed=0):
    rng = random.Random(seed)
    flags = [rng.random() < share_cf for _ in range(n)]
    # counterfactuals are pruned: shorter on average; lengths spread widely
    lengths = [rng.randint(32, 1024) - (24 if f else 0) for f in flags]
    return flags, lengths


def _padding(order, lengths, batch):
    pad = 0
    for b0 in range(0, len(order), batch):
        group = [lengths[i] for i in order[b0 : b0 + batch]]
        pad += max(group) * len(group) - sum(group)
    return pad


def test_grouped_interleave_mixes_every_step_and_pads_less():
    flags, lengths = _data()
    batch, accum = 4, 4
    step = batch * accum
    plain = list(InterleavedSampler(flags, seed=5))
    grouped_sampler = InterleavedSampler(flags, seed=5, lengths=lengths, window=50 * batch)
    grouped = list(grouped_sampler)
    assert sorted(grouped) == list(range(len(flags)))  # a permutation: every example once per epoch
    share = sum(flags) / len(flags)
    for s0 in range(0, len(grouped) - step + 1, step):
        n_cf = sum(flags[i] for i in grouped[s0 : s0 + step])
        assert 0 < n_cf < step  # both kinds in every optimiser step
        assert abs(n_cf - share * step) <= 3  # in about the data's proportion
    assert _padding(grouped, lengths, batch) < 0.5 * _padding(plain, lengths, batch)
    # the order depends on seed and epoch only
    assert list(InterleavedSampler(flags, seed=5, lengths=lengths, window=200)) == grouped
    grouped_sampler.set_epoch(1)
    assert list(grouped_sampler) != grouped


def test_option_maps_to_training_arguments_for_shuffle_only(tmp_path):
    kw = dict(student="s", teacher="t", data=tmp_path / "d.jsonl", out=tmp_path / "o", group_by_length=True)
    def grouped(args):
        return getattr(args, "train_sampling_strategy", None) == "group_by_length" or getattr(args, "group_by_length", False)

    assert grouped(training_arguments(DistillConfig(mix="shuffle", **kw)))
    # interleave groups inside leaf's own sampler; transformers' sampler would undo the interleaving
    assert not grouped(training_arguments(DistillConfig(mix="interleave", **kw)))
    assert DistillConfig(student="s", teacher="t", data=tmp_path / "d.jsonl", out=tmp_path).group_by_length is False


def test_trainer_uses_the_grouped_sampler(distill_setup, tmp_path):
    from leaf.distill.run import build_trainer

    for mix in ("interleave", "shuffle"):
        cfg = DistillConfig(student=str(distill_setup / "student"), teacher=str(distill_setup / "teacher"),
                            data=distill_setup / "d.jsonl", counterfactuals=distill_setup / "cf.jsonl",
                            out=tmp_path / mix, mix=mix, group_by_length=True, batch_size=2)
        trainer = build_trainer(cfg)
        sampler = trainer._get_train_sampler()
        order = list(sampler)
        assert sorted(order) == list(range(len(trainer.train_dataset)))
        if mix == "interleave":
            assert isinstance(sampler, InterleavedSampler) and sampler.window == 100 and sampler.lengths
        else:
            assert type(sampler).__name__ == "LengthGroupedSampler"
