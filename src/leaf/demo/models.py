"""The demo's tiny tokenizer, teacher and student: trained locally, cached on disk.

The premise of LeaF made real on the synthetic tasks of :mod:`leaf.demo.tasks`:

* the **teacher** (larger, longer trained) learns from unconfounded data --
  clean instructions and counterfactual ones whose planted value never equals
  the answer -- so it computes the answer and ignores planted text;
* the **student** (smaller, fewer steps) learns from clean instructions plus
  the *confounded* distribution, where the planted value equals the answer
  95 % of the time; copying the planted value is the cheap shortcut, so it
  solves clean instructions yet is misled when the planted value is wrong.

Both are LLaMA-style causal LMs from :func:`leaf.tiny.build_model`, trained with
a plain next-token loss on response tokens only. :func:`build` trains the
tokenizer and both models once per setting and caches them under
``cache_dir/<hash of the settings>/{tokenizer,teacher,student}`` (each saved
with ``save_pretrained``, so ``leaf.models.load_model`` reads them).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from leaf.batching import IGNORE_INDEX, pad
from leaf.demo.tasks import generate_mix

#: Bump when the generator or the training recipe changes, to invalidate caches.
RECIPE_VERSION = 4

# Seeds of the data sets: training data never shares problems with test data.
TRAIN_SEED = 1000
TOKENIZER_SEED = 2000


@dataclass(frozen=True)
class ModelSpec:
    """Size and training budget of one tiny causal LM."""

    hidden_size: int
    num_layers: int
    num_heads: int
    steps: int
    lr: float = 3e-3
    batch_size: int = 32
    warmup: int = 20
    weight_decay: float = 0.01
    seed: int = 0


@dataclass(frozen=True)
class DemoModelsConfig:
    """Everything that determines the tokenizer, teacher and student (the cache key)."""

    families: tuple[str, ...] = ("arith", "code")  # lookup: the tiny teacher does not learn it in budget
    n_train: int = 2000  # problems per family in each training split
    bias: float = 0.95  # student's confounded split: P(planted value == answer)
    student_clean_share: float = 0.5  # share of clean instructions in the student's data
    vocab_size: int = 512
    teacher: ModelSpec = ModelSpec(hidden_size=64, num_layers=2, num_heads=4, steps=1000, batch_size=32, seed=1)
    student: ModelSpec = ModelSpec(hidden_size=32, num_layers=2, num_heads=4, steps=700, batch_size=16, lr=5e-3, seed=2)
    seed: int = 0

    def key(self) -> str:
        payload = json.dumps({"recipe": RECIPE_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def teacher_key(self) -> str:
        """What the tokenizer and teacher depend on (not the student's settings): a build with another
        student reuses them."""
        return teacher_key(asdict(self))


def teacher_key(config: dict[str, Any]) -> str:
    """:meth:`DemoModelsConfig.teacher_key` of a config as stored in a build's settings.json."""
    fields = ("families", "n_train", "vocab_size", "teacher", "seed")
    payload = json.dumps({"recipe": RECIPE_VERSION, **{k: config[k] for k in fields}}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


QUICK = DemoModelsConfig(
    n_train=1000,
    teacher=ModelSpec(hidden_size=64, num_layers=2, num_heads=4, steps=500, batch_size=32, seed=1),
    student=ModelSpec(hidden_size=32, num_layers=2, num_heads=4, steps=400, batch_size=16, lr=5e-3, seed=2),
)


#: The v2 benchmark: the distractor-sentence family added, and a weaker student (fewer steps, more
#: confounded data) that plain KD improves on clean problems too.
#: Lookup is left out: a teacher of 3 layers and 2000 steps still solves only 49 % of clean lookup problems
#: (docs/demo.md, "v2"), so no arm could learn it from the teacher.
V2 = DemoModelsConfig(
    families=("arith", "code", "distract"),
    student_clean_share=0.3,
    teacher=ModelSpec(hidden_size=64, num_layers=2, num_heads=4, steps=1500, batch_size=32, seed=1),
    student=ModelSpec(hidden_size=32, num_layers=2, num_heads=4, steps=700, batch_size=16, lr=5e-3, seed=2),
)

V2_QUICK = DemoModelsConfig(
    families=("arith", "distract"),
    n_train=1000,
    teacher=ModelSpec(hidden_size=64, num_layers=2, num_heads=4, steps=500, batch_size=32, seed=1),
    student=ModelSpec(hidden_size=32, num_layers=2, num_heads=4, steps=250, batch_size=16, lr=5e-3, seed=2),
)


def models_config(setting: str, *, quick: bool = False) -> DemoModelsConfig:
    """The tokenizer/teacher/student settings of a demo setting (``v1``: the first benchmark's, ``v2``: the default benchmark's)."""
    if setting == "v1":
        return QUICK if quick else DemoModelsConfig()
    return V2_QUICK if quick else V2


@dataclass
class DemoModels:
    """Paths of a built (or cached) tokenizer, teacher and student, with build timings."""

    root: Path
    config: DemoModelsConfig
    timings: dict[str, float] = field(default_factory=dict)
    cached: bool = False

    @property
    def tokenizer_dir(self) -> Path:
        return self.root / "tokenizer"

    @property
    def teacher_dir(self) -> Path:
        return self.root / "teacher"

    @property
    def student_dir(self) -> Path:
        return self.root / "student"

    def load(self) -> tuple[Any, Any, Any]:
        """``(tokenizer, teacher, student)``, in eval mode."""
        from leaf.models import load_model, load_tokenizer

        return (
            load_tokenizer(str(self.tokenizer_dir)),
            load_model(str(self.teacher_dir)),
            load_model(str(self.student_dir)),
        )


def default_cache_dir() -> Path:
    return Path(os.environ.get("LEAF_CACHE", Path.home() / ".cache" / "leaf")) / "demo"


# -- data -------------------------------------------------------------------------------------


def teacher_data(cfg: DemoModelsConfig) -> list[dict[str, Any]]:
    """Unconfounded: clean instructions and counterfactual ones (planted value never the answer)."""
    clean = generate_mix(cfg.families, "clean", cfg.n_train, seed=TRAIN_SEED + cfg.seed)
    cf = generate_mix(cfg.families, "counterfactual", cfg.n_train, seed=TRAIN_SEED + cfg.seed, start=cfg.n_train)
    return clean + cf


def student_data(cfg: DemoModelsConfig) -> list[dict[str, Any]]:
    """Clean instructions plus the confounded distribution (planted value = answer w.p. ``bias``)."""
    n_clean = round(cfg.n_train * cfg.student_clean_share)
    seed = TRAIN_SEED + cfg.seed + 1
    clean = generate_mix(cfg.families, "clean", n_clean, seed=seed)
    conf = generate_mix(cfg.families, "confounded", cfg.n_train - n_clean, seed=seed, bias=cfg.bias, start=n_clean)
    return clean + conf


def tokenizer_corpus(cfg: DemoModelsConfig) -> list[str]:
    """Instructions and responses of every split (so planted phrases have tokens too)."""
    texts = []
    for split in ("clean", "confounded", "counterfactual"):
        for rec in generate_mix(cfg.families, split, 300, seed=TOKENIZER_SEED + cfg.seed):
            texts += [rec["instruction"], rec["response"]]
    return texts


# -- training ---------------------------------------------------------------------------------


def encode_for_training(tokenizer: Any, records: list[dict[str, Any]]) -> list[tuple[list[int], list[int]]]:
    """``(input_ids, labels)`` per record: labels are ``IGNORE_INDEX`` outside the response."""
    from leaf.data.render import encode, render

    out = []
    for rec in records:
        rendered = render(tokenizer, rec["instruction"], rec["response"])
        enc = encode(tokenizer, rendered.text)
        start = rendered.response_span[0]
        labels = [tid if s >= start else IGNORE_INDEX for tid, (s, _) in zip(enc.input_ids, enc.offsets)]
        out.append((enc.input_ids, labels))
    return out


def train(model: Any, tokenizer: Any, records: list[dict[str, Any]], spec: ModelSpec, *,
          desc: str | None = None) -> list[float]:
    """Supervised next-token training on response tokens; AdamW, warm-up then cosine decay.

    Returns the loss of every step. Batches are drawn by a seeded shuffle. With ``desc``, a progress
    bar of that name counts the steps.
    """
    import torch

    examples = encode_for_training(tokenizer, records)
    gen = torch.Generator().manual_seed(spec.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        if step < spec.warmup:
            return (step + 1) / spec.warmup
        progress = (step - spec.warmup) / max(1, spec.steps - spec.warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    pad_id = tokenizer.pad_token_id
    order: list[int] = []
    losses = []
    model.train()
    from tqdm.auto import tqdm

    for _ in tqdm(range(spec.steps), desc=desc, disable=desc is None, leave=False, unit="step"):
        if len(order) < spec.batch_size:
            order += torch.randperm(len(examples), generator=gen).tolist()
        batch = [examples[i] for i in order[: spec.batch_size]]
        del order[: spec.batch_size]
        ids, mask = pad([x for x, _ in batch], pad_id)
        labels, _ = pad([y for _, y in batch], IGNORE_INDEX)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    return losses


# -- build and cache --------------------------------------------------------------------------


def build_tokenizer_for(cfg: DemoModelsConfig) -> Any:
    from leaf.tiny import build_tokenizer

    return build_tokenizer(tokenizer_corpus(cfg), style="llama3", vocab_size=cfg.vocab_size, model_max_length=512)


def build_model_for(tokenizer: Any, spec: ModelSpec) -> Any:
    from leaf.tiny import build_model

    return build_model(
        tokenizer,
        arch="llama",
        hidden_size=spec.hidden_size,
        num_layers=spec.num_layers,
        num_heads=spec.num_heads,
        max_position_embeddings=256,
        seed=spec.seed,
    )


def build(
    cfg: DemoModelsConfig = DemoModelsConfig(),
    *,
    cache_dir: str | Path | None = None,
    force: bool = False,
    log: Any = print,
) -> DemoModels:
    """Train (or reuse from the cache) the tokenizer, teacher and student for ``cfg``."""
    import torch

    root = Path(cache_dir or default_cache_dir()) / cfg.key()
    done = root / "settings.json"
    if done.exists() and not force:
        info = json.loads(done.read_text())
        return DemoModels(root, cfg, timings=info.get("timings", {}), cached=True)

    root.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    history: dict[str, list[float]] = {}
    roles = [("teacher", cfg.teacher), ("student", cfg.student)]
    t0 = time.perf_counter()
    reuse = _built_teacher(root.parent, cfg.teacher_key(), exclude=root)
    if reuse is not None:  # same tokenizer and teacher settings: copy them instead of training again
        for part in ("tokenizer", "teacher"):
            shutil.rmtree(root / part, ignore_errors=True)
            shutil.copytree(reuse / part, root / part)
        from leaf.models import load_tokenizer

        tokenizer = load_tokenizer(str(root / "tokenizer"))
        roles = roles[1:]
        log(f"[demo] teacher and tokenizer reused from {reuse}")
    else:
        tokenizer = build_tokenizer_for(cfg)
        tokenizer.save_pretrained(root / "tokenizer")
    timings["tokenizer_s"] = time.perf_counter() - t0

    data_of = {"teacher": teacher_data, "student": student_data}
    for role, spec in roles:
        data = data_of[role](cfg)
        t0 = time.perf_counter()
        torch.manual_seed(spec.seed)
        model = build_model_for(tokenizer, spec)
        log(f"[demo] training the {role} ({spec.steps} steps; once, then cached in {root})")
        losses = train(model, tokenizer, data, spec, desc=f"train {role}")
        model.save_pretrained(root / role)
        tokenizer.save_pretrained(root / role)  # each model folder loads on its own with from_pretrained
        timings[f"{role}_s"] = time.perf_counter() - t0
        history[role] = losses
        n_params = sum(p.numel() for p in model.parameters())
        log(f"[demo] {role}: {n_params / 1e3:.0f}k params, {spec.steps} steps, "
            f"final loss {sum(losses[-20:]) / min(20, len(losses)):.3f}, {timings[f'{role}_s']:.0f}s")
    if reuse is not None and (reuse / "losses.json").exists():
        history["teacher"] = json.loads((reuse / "losses.json").read_text()).get("teacher", [])
    (root / "losses.json").write_text(json.dumps(history))
    # Written last: its presence marks a complete build.
    done.write_text(json.dumps({"config": asdict(cfg), "recipe": RECIPE_VERSION, "timings": timings}, indent=2))
    return DemoModels(root, cfg, timings=timings)


#: The folder (under a build's root) of the teacher with another tokenizer (:func:`other_tokenizer_teacher`).
OTHER_TEACHER = "teacher_other_tokenizer"


def other_tokenizer_teacher(models: DemoModels, *, log: Any = print) -> Path:
    """A teacher with its own tokenizer, trained exactly as the build's teacher (same data, size, steps, seed):
    a ChatML template and a byte-level BPE trained on the same corpus with a smaller vocabulary (3/4 of the
    student's), so the two tokenizations of one response differ. Trained once, cached in the build's folder."""
    import torch

    from leaf.tiny import build_tokenizer

    cfg = models.config
    folder = models.root / OTHER_TEACHER
    if (folder / "config.json").exists():
        return folder
    tokenizer = build_tokenizer(tokenizer_corpus(cfg), style="chatml", vocab_size=cfg.vocab_size * 3 // 4,
                                model_max_length=512)
    t0 = time.perf_counter()
    torch.manual_seed(cfg.teacher.seed)
    model = build_model_for(tokenizer, cfg.teacher)
    log(f"[demo] training the teacher with another tokenizer ({cfg.teacher.steps} steps; once, then cached in "
        f"{folder})")
    losses = train(model, tokenizer, teacher_data(cfg), cfg.teacher, desc="train teacher (other tokenizer)")
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "losses.json").write_text(json.dumps({"teacher": losses, "seconds": time.perf_counter() - t0}))
    tmp.rename(folder)  # complete or absent
    return folder


def _built_teacher(cache: Path, key: str, *, exclude: Path) -> Path | None:
    """A finished build under ``cache`` whose tokenizer and teacher have ``key`` (None if there is none)."""
    for done in sorted(cache.glob("*/settings.json")):
        if done.parent == exclude:
            continue
        try:
            if teacher_key(json.loads(done.read_text())["config"]) == key:
                return done.parent
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def with_steps(cfg: DemoModelsConfig, teacher_steps: int, student_steps: int) -> DemoModelsConfig:
    """``cfg`` with other training budgets (for experiments)."""
    return replace(cfg, teacher=replace(cfg.teacher, steps=teacher_steps), student=replace(cfg.student, steps=student_steps))
