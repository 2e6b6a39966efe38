"""The stage table of ``leaf run`` and the path wiring between stages.

A recipe (docs/recipes.md) lists stage instances by name. Each instance is of
one *kind* (:data:`KINDS`: convert, demo-data, label, detect, prune, distill,
cache-teacher, evaluate, analyze, report); a name that is a kind is an instance
of that kind, any other name says its kind with ``stage:``. An instance takes
the options of its kind's config dataclass (the keys of that command's YAML),
plus the recipe's shared keys (``teacher``, ``student``, ``task``, ...) for the
options it has. The paths *between* stages are never the user's: every
instance writes into ``RUN/<name>/``, and its inputs are the outputs of the
stages it reads from (by default the latest earlier stage of the kind it
needs; ``input: [names]`` chooses them). A recipe that sets such a path is
refused.

:func:`plan` turns a recipe mapping into a list of :class:`Step` (the resolved
config values of each instance, ready for ``leaf.config.build``); nothing here
loads a model or reads a data file.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leaf.config import ConfigError, canonical_names, field_names


@dataclass(frozen=True)
class Kind:
    """One kind of stage: its command, config dataclass, API function and the path fields the runner owns."""

    name: str
    command: str  #: what follows ``leaf`` on a command line
    config: str  #: "module:ConfigClass"
    run: str  #: "module:function"
    owned: tuple[str, ...]  #: path fields filled by the runner (a recipe may not set them)
    output: str  #: the file the instance writes inside RUN/<name>/ ("": the folder itself is its output)
    nullable: tuple[str, ...] = ()  #: owned fields a recipe may set to null (= not fed)

    def config_class(self) -> type:
        module, _, name = self.config.partition(":")
        return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]

    def function(self) -> Any:
        module, _, name = self.run.partition(":")
        return getattr(importlib.import_module(module), name)


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("convert", "data convert", "leaf.data.config:ConvertConfig", "leaf.data.convert:convert",
         ("out",), "samples.jsonl"),
    Kind("demo-data", "demo-data", "leaf.demo.export.config:DemoDataConfig", "leaf.demo.export:demo_data",
         ("out",), ""),
    Kind("distractors", "distractors", "leaf.data.config:DistractorsConfig", "leaf.data.distractors:distractors",
         ("out",), ""),
    Kind("label", "label", "leaf.evaluate.config:LabelConfig", "leaf.evaluate:label",
         ("data", "out"), "labelled.jsonl"),
    Kind("detect", "detect", "leaf.detect.config:DetectConfig", "leaf.detect:detect",
         ("data", "out"), "detections.jsonl"),
    Kind("prune", "prune", "leaf.prune.config:PruneConfig", "leaf.prune:prune",
         ("data", "detections", "out"), "counterfactuals.jsonl"),
    Kind("distill", "distill", "leaf.distill.config:DistillConfig", "leaf.distill:distill",
         ("data", "counterfactuals", "teacher_cache", "out"), "", ("counterfactuals", "teacher_cache")),
    Kind("cache-teacher", "cache-teacher", "leaf.distill.config:CacheConfig", "leaf.distill:build_cache",
         ("data", "counterfactuals", "out"), "", ("counterfactuals",)),
    Kind("evaluate", "evaluate", "leaf.evaluate.config:EvaluateConfig", "leaf.evaluate:evaluate",
         ("out", "predictions", "compare"), "results.json"),
    Kind("analyze", "analyze", "leaf.analyze.config:AnalyzeConfig", "leaf.analyze:analyze",
         ("data", "samples", "out"), ""),
    Kind("report", "report", "leaf.report.config:ReportConfig", "leaf.report:write_report",
         ("run", "out", "samples"), "report.html"),
)}
ALIASES = {"cache_teacher": "cache-teacher", "data": "convert", "eval": "evaluate", "demo_data": "demo-data"}
#: Kinds whose output is a samples file the later stages read (the originals of distillation).
SAMPLES_KINDS = ("convert", "demo-data", "distractors")

#: Keys of the recipe itself (not stage options): where the run goes, which stages, the cluster of the estimates.
RECIPE_KEYS = ("run", "stages", "gpus", "gpu", "accelerate", "mfu", "arms")
#: Keys of a stage section that are the runner's, not the stage's.
STAGE_KEYS = ("stage", "input", "accelerate", "split")
#: The split of a distractors stage later stages read as their samples unless ``split:`` names the other.
DISTRACTOR_SPLIT = "distracted"
#: Settings that do not change what a stage produces: a finished stage is not redone for them.
FREE = frozenset({"overwrite", "progress"})
#: ``model`` references an evaluate / analyze stage may use besides the names of distill stages.
MODEL_WORDS = ("student", "teacher")


@dataclass
class Step:
    """One stage instance of a recipe, resolved: its kind, its config values and where its files go."""

    name: str
    kind: Kind
    values: dict[str, Any]  #: config field -> value (paths as strings, relative to where leaf runs)
    folder: Path  #: RUN/<name>
    sources: list[str] = field(default_factory=list)  #: the earlier stages whose outputs it reads
    merges: dict[str, list[str]] = field(default_factory=dict)  #: field -> files concatenated into its input
    accelerate: str | None = None  #: distill: the accelerate config of the printed launch command
    index: int = 0
    split: str | None = None  #: distractors: the split later stages read as samples (RUN/<name>/SPLIT.jsonl)

    @property
    def output(self) -> Path:
        """The file or folder whose existence says the stage wrote something."""
        return self.folder / self.kind.output if self.kind.output else self.folder

    @property
    def marker(self) -> Path:
        return self.folder.parent / "stages" / f"{self.name}.json"

    @property
    def started(self) -> Path:
        """Written when the stage starts (the finish times of what it reads), removed when it finishes: an
        interrupted stage whose inputs were made again since starts over instead of resuming."""
        return self.folder.parent / "stages" / f"{self.name}.started.json"

    @property
    def yaml(self) -> Path:
        return self.folder.parent / "stages" / f"{self.name}.yaml"


def kind_of(name: str, section: Mapping[str, Any]) -> Kind:
    kind = section.get("stage", name)
    kind = ALIASES.get(str(kind), str(kind))
    if kind not in KINDS:
        where = f"stage {name!r}" + (f": stage: {section['stage']!r}" if "stage" in section else "")
        raise ConfigError(f"{where} is not a stage kind; give `stage:` one of {', '.join(KINDS)} "
                          f"(named instances: `{name}: {{stage: distill, ...}}`)")
    return KINDS[kind]


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]


def plan(recipe: Mapping[str, Any], source: str = "recipe") -> tuple[Path, list[Step], dict[str, Any]]:
    """``(run folder, steps, runner settings)`` of a recipe mapping (already merged with ``--set``)."""
    if not isinstance(recipe, Mapping):
        raise ConfigError(f"{source}: a recipe is a mapping (run:, stages:, shared keys, one section per stage)")
    if not recipe.get("run"):
        raise ConfigError(f"{source}: `run:` (the run folder) is required")
    names = _as_list(recipe.get("stages"))
    if not names:
        raise ConfigError(f"{source}: `stages:` (the list of stages to run, in order) is required")
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: a stage is listed twice in `stages:`; name each instance (e.g. distill_kd)")
    run = Path(str(recipe["run"]))
    settings = {k: recipe[k] for k in ("gpus", "gpu", "accelerate", "mfu") if k in recipe}
    sections = {n: recipe.get(n) or {} for n in names}
    for n, sec in sections.items():
        if not isinstance(sec, Mapping):
            raise ConfigError(f"{source}: stage {n!r}: expected a mapping of options, got {sec!r}")
    shared = {k: v for k, v in recipe.items() if k not in RECIPE_KEYS and k not in names}
    orphans = [k for k, v in shared.items() if isinstance(v, Mapping)]
    if orphans:
        raise ConfigError(f"{source}: section {orphans[0]!r} is not in `stages:` ({', '.join(names)}); "
                          "list it there or remove it")
    kinds = {n: kind_of(n, sections[n]) for n in names}
    settings["arms"] = _arms(recipe.get("arms"), kinds, source)
    demo = _demo_stage(names, kinds, run, shared, source)
    if demo is not None:  # its models are every later stage's teacher and student
        shared = {**shared, **{k: str(demo[k]) for k in MODEL_WORDS}}
    used: set[str] = set()
    steps: list[Step] = []
    for i, name in enumerate(names):
        kind, sec = kinds[name], dict(sections[name])
        where = f"{source}: stage {name!r} ({kind.name})"
        cls = kind.config_class()
        accepted = field_names(cls)
        own = {k: v for k, v in sec.items() if k not in STAGE_KEYS}
        own = canonical_names(cls, own, where)
        for key in kind.owned:
            if key in own and not (key in kind.nullable and own[key] is None):
                raise ConfigError(
                    f"{where}: {key!r} is a path between stages; the runner fills it in "
                    f"({_explain(kind, key)}); remove it" + (" (or set it to null for none)" if key in
                                                             kind.nullable else ""))
        values: dict[str, Any] = {}
        for key, value in shared.items():
            canon = accepted.get(str(key).replace("-", "_"))
            if canon is not None and canon not in kind.owned:
                values[canon] = value
                used.add(key)
        values.update(own)
        step = Step(name, kind, values, run / name, index=i,
                    accelerate=sec.get("accelerate", settings.get("accelerate")), split=_split(kind, sec, where))
        _wire(step, sec.get("input"), steps, shared, where)
        for key in MODEL_WORDS:
            if isinstance(step.values.get(key), str) and step.values[key] in names:
                raise ConfigError(f"{where}: {key} {step.values[key]!r} is a stage that does not run before "
                                  "this one; list it earlier in `stages:`")
        if demo is not None and i > 0 and names[0] not in step.sources:
            step.sources.insert(0, names[0])  # reads the models (and maybe the data) of the demo-data stage
        steps.append(step)
    unused = [k for k in shared if k not in used and k not in MODEL_WORDS]
    if unused:
        raise ConfigError(f"{source}: shared key {unused[0]!r} is an option of none of the stages "
                          f"({', '.join(names)})")
    return run, steps, settings


def _arms(value: Any, kinds: Mapping[str, Kind], source: str) -> dict[str, list[str]]:
    """The recipe's ``arms:``: arm name -> its evaluate stages, one per seed (compared at the end of a run)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not value:
        raise ConfigError(f"{source}: arms: expected a mapping ARM: [evaluate stages, one per seed], got {value!r}")
    arms = {}
    for arm, members in value.items():
        listed = _as_list(members)
        if not listed or not all(isinstance(m, str) for m in listed):
            raise ConfigError(f"{source}: arms: {arm!r}: expected a list of evaluate stage names, got {members!r}")
        missing = [m for m in listed if m not in kinds]
        if missing:
            raise ConfigError(f"{source}: arms: {arm!r}: {missing[0]!r} is not in `stages:`")
        wrong = [m for m in listed if kinds[m].name != "evaluate"]
        if wrong:
            raise ConfigError(f"{source}: arms: {arm!r}: {wrong[0]!r} is a {kinds[wrong[0]].name} stage; an arm "
                              "lists evaluate stages (one per seed)")
        if len(set(listed)) != len(listed):
            raise ConfigError(f"{source}: arms: {arm!r} lists a stage twice")
        arms[str(arm)] = listed
    return arms


def _demo_stage(names: list[str], kinds: Mapping[str, Kind], run: Path, shared: Mapping[str, Any],
                source: str) -> dict[str, Any] | None:
    """The files of the recipe's demo-data stage (``DemoDataConfig.paths``), or None; it must come first."""
    found = [n for n in names if kinds[n].name == "demo-data"]
    if not found:
        return None
    name = found[0]
    if len(found) > 1:
        raise ConfigError(f"{source}: stages {found[0]!r} and {found[1]!r} are both demo-data stages; a recipe "
                          "has one (its models are the recipe's teacher and student)")
    if names[0] != name:
        raise ConfigError(f"{source}: the demo-data stage {name!r} must be the first in `stages:` (its models are "
                          f"the teacher and student of every stage; {names[0]!r} comes before it)")
    paths: dict[str, Any] = kinds[name].config_class().paths(run / name)
    for key in MODEL_WORDS:
        if key in shared:
            raise ConfigError(f"{source}: shared key {key!r}: the demo-data stage {name!r} provides the {key} "
                              f"({paths[key]}); remove it")
    return paths


def _split(kind: Kind, section: Mapping[str, Any], where: str) -> str | None:
    """The ``split:`` of a distractors stage (default ``distracted``); refused on any other kind."""
    if kind.name != "distractors":
        if "split" in section:
            raise ConfigError(f"{where}: `split:` is a key of distractors stages only; remove it")
        return None
    from leaf.data.distractors import SAMPLE_SPLITS

    split = str(section.get("split", DISTRACTOR_SPLIT))
    if split not in SAMPLE_SPLITS:
        raise ConfigError(f"{where}: split: {split!r}; use one of {', '.join(SAMPLE_SPLITS)}")
    return split


def _samples_file(step: Step, split: str | None = None) -> str:
    """The samples a convert, label, demo-data (its pool) or distractors stage (a split of it) writes."""
    if step.kind.name == "demo-data":
        return str(step.kind.config_class().paths(step.folder)["samples"])
    if step.kind.name == "distractors":
        from leaf.data.distractors import split_file

        return str(step.folder / split_file(split or step.split or DISTRACTOR_SPLIT))
    return _output(step)


def _explain(kind: Kind, key: str) -> str:
    if key == "out":
        return f"RUN/<stage>/{kind.output}"
    return {
        "data": "the output of the stage it reads from",
        "detections": "the detect stage's detections.jsonl",
        "counterfactuals": "the prune stages' counterfactuals.jsonl",
        "teacher_cache": "the cache-teacher stage's folder",
        "samples": "the samples the detect stage read",
        "run": "the run folder",
        "predictions": "not used by a recipe",
        "compare": "the runner compares every evaluate stage at the end",
    }.get(key, "between stages")


def _pick(kinds: tuple[str, ...], earlier: list[Step], chosen: list[str] | None, how: str) -> list[Step]:
    """The earlier steps of ``kinds`` a step reads: those named in ``chosen``, else the latest (or all)."""
    if chosen is not None:
        return [s for s in earlier if s.name in chosen and s.kind.name in kinds]
    for kind in kinds:
        found = [s for s in earlier if s.kind.name == kind]
        if found:
            return found if how == "all" else found[-1:]
    return []


def _data_of(step: Step) -> str | None:
    """The samples file a step read (detect: its data; the file a prune of it needs)."""
    value = step.values.get("data")
    return None if value is None else str(value)


def _output(step: Step) -> str:
    return str(step.output)


def _model_ref(ref: str, earlier: list[Step], values: Mapping[str, Any], where: str,
               key: str = "model") -> tuple[str, str | None]:
    """``(model path or id, the distill stage it comes from)`` of a model value (evaluate / analyze ``model``,
    any stage's ``teacher`` / ``student``): ``student`` / ``teacher`` (the recipe's shared keys), the name of
    an earlier distill stage (the model it trained), or a model of the user's."""
    if ref in MODEL_WORDS and ref != key:
        model = values.get(ref)
        if not model:
            raise ConfigError(f"{where}: {key} {ref!r} needs the recipe's shared key `{ref}:`")
        ref = str(model)
        if ref in MODEL_WORDS:
            raise ConfigError(f"{where}: {key} {ref!r}: the shared key names the other one")
    for s in earlier:
        if s.name == ref:
            if s.kind.name != "distill":
                raise ConfigError(f"{where}: {key} {ref!r} is a {s.kind.name} stage; name a distill stage, "
                                  f"{' or '.join(MODEL_WORDS)}")
            return str(s.output), s.name
    return (str(Path(ref).expanduser()) if ref.startswith("~") else ref), None  # the user's (hub id or folder)


def _wire(step: Step, chosen_raw: Any, earlier: list[Step], shared: Mapping[str, Any], where: str) -> None:
    """Fill the owned path fields of ``step`` from earlier steps (the wiring table of docs/recipes.md)."""
    chosen = None if chosen_raw is None else _as_list(chosen_raw)
    if chosen is not None:
        names = {s.name for s in earlier}
        for c in chosen:
            if c not in names:
                raise ConfigError(f"{where}: input {c!r} is not a stage listed before it "
                                  f"({', '.join(sorted(names)) or 'none'})")
    v, k = step.values, step.kind.name
    v["out"] = _output(step)
    for key in MODEL_WORDS:  # a stage's teacher / student may be a model an earlier distill stage trained
        if isinstance(v.get(key), str):
            v[key], src = _model_ref(v[key], earlier, shared, where, key)
            if src and src not in step.sources:
                step.sources.append(src)

    def need(kinds_: tuple[str, ...], how: str = "latest", what: str = "") -> list[Step]:
        found = _pick(kinds_, earlier, chosen, how)
        if not found:
            raise ConfigError(f"{where}: needs {what or 'the output of'} an earlier {' or '.join(kinds_)} stage "
                              "(add one before it in `stages:`" + (", or name it in `input:`)" if chosen else ")"))
        return found

    def feed(key: str, found: list[Step], files: list[str]) -> None:
        step.sources += [s.name for s in found if s.name not in step.sources]
        if len(files) == 1:
            v[key] = files[0]
        else:
            merged = step.folder.parent / "inputs" / f"{step.name}.{key}.jsonl"
            step.merges[key] = files
            v[key] = str(merged)

    if k in SAMPLES_KINDS:
        return
    if k == "label":
        found = need(SAMPLES_KINDS, what="the samples of")
        feed("data", found, [_samples_file(found[0])])
    elif k == "detect":
        found = need(("label", *SAMPLES_KINDS), what="the samples of")
        feed("data", found, [_samples_file(found[0])])
    elif k == "prune":
        found = need(("detect",))
        if len(found) > 1:
            raise ConfigError(f"{where}: reads one detect stage; `input:` names {len(found)}")
        feed("detections", found, [_output(found[0])])
        v["data"] = _data_of(found[0])
    elif k in ("distill", "cache-teacher"):
        found = need(SAMPLES_KINDS, "all", "the samples of")
        feed("data", found, [_samples_file(s) for s in found])
        if "counterfactuals" in v:  # set to null: plain KD on the originals
            v.pop("counterfactuals")
        else:
            cfs = _pick(("prune",), earlier, chosen, "all")
            if cfs:
                feed("counterfactuals", cfs, [_output(s) for s in cfs])
        if k == "distill":
            if "teacher_cache" in v:
                v.pop("teacher_cache")
            else:
                caches = _pick(("cache-teacher",), earlier, chosen, "latest")
                if caches:
                    feed("teacher_cache", caches, [_output(caches[0])])
        elif "tokenizer" not in v and shared.get("student"):
            v["tokenizer"] = str(shared["student"])  # the cache is rendered with the student's tokenizer
    elif k == "evaluate":
        ref = v.get("model") or "student"
        model, src = _model_ref(str(ref), earlier, shared, where)
        v["model"] = model
        v.setdefault("name", str(ref))
        if src:
            step.sources.append(src)
        demo = [s for s in earlier if s.kind.name == "demo-data"]
        if demo:  # the demo's test sets by split name; all of them when no benchmark is given
            tests = {k_: str(p) for k_, p in demo[0].kind.config_class().paths(demo[0].folder)["tests"].items()}
            v["benchmark"] = [tests.get(b, b) for b in _as_list(v["benchmark"])] if "benchmark" in v \
                else list(tests.values())
        from leaf.data.distractors import SAMPLE_SPLITS

        splits = {f"{s.name}.{sp}": (s, _samples_file(s, sp)) for s in earlier if s.kind.name == "distractors"
                  for sp in SAMPLE_SPLITS}
        if splits and "benchmark" in v:  # STAGE.SPLIT: that split of an earlier distractors stage
            for b in _as_list(v["benchmark"]):
                if b in splits and splits[b][0].name not in step.sources:
                    step.sources.append(splits[b][0].name)
            v["benchmark"] = [splits[b][1] if b in splits else b for b in _as_list(v["benchmark"])]
    elif k == "analyze":
        known = _pick(("distractors",), earlier, chosen, "latest") if chosen else []
        if known:  # samples whose meta.confounder_spans are known by construction (its chosen split)
            feed("data", known, [_samples_file(known[0])])
        else:
            found = need(("detect",), what="the detections of")
            feed("data", found[-1:], [_output(found[-1])])
            v["samples"] = _data_of(found[-1])
        refs = _as_list(v.get("model")) or ["student", *[s.name for s in earlier if s.kind.name == "distill"]]
        models = [_model_ref(r, earlier, shared, where) for r in refs]
        v["model"] = [m for m, _ in models]
        v.setdefault("label", refs)
        step.sources += [src for _, src in models if src and src not in step.sources]
        if v.get("responses") is not None:  # an earlier evaluate stage: its generations on the analysed split
            from leaf.evaluate.run import generations_path

            evals = {s.name: s for s in earlier if s.kind.name == "evaluate"}
            split = Path(str(v["data"])).stem
            named = [str(r) for r in _as_list(v["responses"])]
            v["responses"] = [str(generations_path(evals[r].output, split)) if r in evals else r for r in named]
            step.sources += [r for r in named if r in evals and r not in step.sources]
    elif k == "report":
        v["run"] = str(step.folder)
        v["out"] = str(step.output)
        samples = [s for s in earlier if s.kind.name == "detect"] or \
            [s for s in earlier if s.kind.name in SAMPLES_KINDS]
        if samples:
            v["samples"] = _data_of(samples[-1]) if samples[-1].kind.name == "detect" else _samples_file(samples[-1])
        step.sources = [s.name for s in earlier if s.kind.name != "report"]


#: The accelerate config a distill stage launches with when the recipe names none (paths in the repository).
ACCELERATE = {"zero3": "configs/accelerate/deepspeed_zero3.yaml", "ddp": "configs/accelerate/multi_gpu_ddp.yaml",
              "single": "configs/accelerate/single_gpu.yaml"}


def accelerate_config(step: Step, gpus: int) -> str:
    """The accelerate config of a distill stage: the recipe's own, else single GPU, DDP with a teacher cache
    (no teacher to shard), or DeepSpeed ZeRO-3."""
    if step.accelerate:
        return str(step.accelerate)
    if gpus == 1:
        return ACCELERATE["single"]
    return ACCELERATE["ddp"] if step.values.get("teacher_cache") else ACCELERATE["zero3"]


def report_view(step: Step, steps: list[Step]) -> list[tuple[Path, str, str]]:
    """What the report's folder holds: ``(source, target inside RUN/<report>/, link | copy | folder)``.

    ``leaf report`` reads one folder laid out as detections.jsonl,
    counterfactuals.jsonl, train*/, eval/*.json and analysis/; the runner
    gives it that folder by linking the stages' files into RUN/<report>/.
    """
    before = steps[: step.index]
    out: list[tuple[Path, str, str]] = []
    for kind, name in (("detect", "detections.jsonl"), ("prune", "counterfactuals.jsonl")):
        found = [s for s in before if s.kind.name == kind]
        if found:
            src = found[0].output
            out += [(src, name, "link"), (src.with_name(src.name + ".meta.json"), name + ".meta.json", "link")]
    for s in before:
        if s.kind.name == "distill":
            out += [(s.output / f, f"train-{s.name}/{f}", "link") for f in ("metrics.jsonl", "leaf_config.json")]
        elif s.kind.name == "evaluate":
            out.append((s.output, f"eval/{s.values.get('name') or s.name}.json", "copy"))
    analyses = [s for s in before if s.kind.name == "analyze"]
    if analyses:
        out.append((analyses[-1].output, "analysis", "folder"))
    return out
