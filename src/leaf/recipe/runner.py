"""``leaf run RECIPE.yaml``: run the stages of a recipe, in order, into one run folder.

Each stage runs in this process through its API function (the config built
from the recipe exactly as ``leaf <stage> --config`` would build it) and writes
into ``RUN/<stage name>/``. When it finishes, its resolved config goes to
``RUN/stages/<name>.json`` (the done marker, written atomically) and
``RUN/stages/<name>.yaml`` (the same config as a ``--config`` file). On a rerun:

* a stage with a marker whose settings match and whose output exists is skipped;
* a stage without a marker runs; if it was interrupted, the stage resumes from
  its own output (every stage does, given the same output and settings);
* a stage with a marker whose settings differ is refused, naming the stage and
  the setting, before anything runs; ``--from STAGE`` deletes the outputs of
  that stage and of every stage after it and runs them again.

Distillation across GPUs is not launched from here: ``--print-commands`` prints
the ``accelerate launch`` command to submit (docs/recipes.md).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from leaf.config import ConfigError, Summary, build, default_of, is_required, make, read_yaml_mapping, to_dict
from leaf.data.jsonl import SettingsMismatch, dumps, write_atomic
from leaf.recipe.config import RecipeConfig
from leaf.recipe.stages import DISTRACTOR_SPLIT, FREE, Step, accelerate_config, plan, report_view

# -- the recipe -------------------------------------------------------------------------------


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The recipe mapping of ``path`` with ``--set`` overrides applied (``KEY=V`` or ``STAGE.KEY=V``)."""
    path = Path(path)
    data = read_yaml_mapping(path, "recipe", "a mapping (run:, stages:, shared keys, one section per stage)")
    for item in overrides:
        key, _, text = item.partition("=")
        value = yaml.safe_load(text) if text.strip() else None
        key = key.strip()
        if "." in key:
            stage, _, option = key.partition(".")
            section = data.get(stage)
            if section is None:
                section = data[stage] = {}
            if not isinstance(section, dict):
                raise ConfigError(f"--set {item}: {stage!r} is not a stage section of the recipe")
            section[option] = value
        else:
            data[key] = value
    return data


def _relative(value: Any, run: str) -> Any:
    """Paths under the run folder written as ``{run}/...``: a marker survives moving the run folder."""
    if isinstance(value, list):
        return [_relative(v, run) for v in value]
    if isinstance(value, str) and (value == run or value.startswith(run + "/")):
        return "{run}" + value[len(run):]
    return value


def settings_of(config: Any, run: Path) -> dict[str, Any]:
    """What a marker records of a stage's config: every option (JSON-safe), run paths relative, FREE ones out."""
    values = json.loads(dumps(to_dict(config)))
    return {k: _relative(v, str(run)) for k, v in values.items() if k not in FREE}


def _unchanged_by_new_options(config: Any, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new`` without the options a finished stage's marker does not know that are at their defaults: an option
    added to leaf since the stage finished does not change what it made."""
    import dataclasses

    known = json.loads(dumps({f.name: default_of(f) for f in dataclasses.fields(config) if not is_required(f)}))
    return {k: v for k, v in new.items() if k in old or k not in known or v != known[k]}


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return [f"{k} ({json.dumps(old.get(k))} -> {json.dumps(new.get(k))})" for k in keys]


@dataclass
class Plan:
    """A recipe resolved: the run folder, every step (built configs), the selected ones and those to redo."""

    recipe: Path
    run: Path
    steps: list[Step]
    selected: list[Step]
    redo: set[str]
    configs: dict[str, Any]
    settings: dict[str, Any]
    gpus: int
    gpu: str


def resolve_plan(cfg: RecipeConfig) -> Plan:
    """Read, override, wire and check the recipe; build every stage's config (nothing runs, nothing loads)."""
    data = load_recipe(cfg.recipe, cfg.overrides)
    run, steps, settings = plan(data, str(cfg.recipe))
    names = [s.name for s in steps]
    for flag, name in (("--from", cfg.from_stage), ("--only", cfg.only), ("--until", cfg.until)):
        if name is not None and name not in names:
            raise ConfigError(f"{flag} {name}: not a stage of this recipe ({', '.join(names)})")
    first = names.index(cfg.from_stage) if cfg.from_stage else 0
    last = names.index(cfg.until) if cfg.until else len(names) - 1
    if cfg.only:
        first = last = names.index(cfg.only)
    if first > last:
        raise ConfigError(f"--from {cfg.from_stage} comes after --until {cfg.until}")
    selected = steps[first:last + 1]
    configs = {}
    for step in steps:
        configs[step.name] = build(step.kind.config_class(), dict(step.values),
                                   f"{cfg.recipe}: stage {step.name!r} ({step.kind.name})")
    gpus = int(cfg.gpus or settings.get("gpus") or 8)
    gpu = str(cfg.gpu or settings.get("gpu") or "H100")
    redo = {s.name for s in selected} if cfg.from_stage else set()
    return Plan(Path(cfg.recipe), run, steps, selected, redo, configs, settings, gpus, gpu)


# -- markers ----------------------------------------------------------------------------------


def read_marker(step: Step) -> dict[str, Any] | None:
    return _read_json(step.marker)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None  # markers are written atomically; an unreadable one is treated as absent
    return obj if isinstance(obj, dict) else None


def _has_output(step: Step) -> bool:
    out = step.output
    if step.kind.output:
        return out.is_file()
    return out.is_dir() and any(out.iterdir())


def check(p: Plan) -> dict[str, str]:
    """``{stage: "skip" | "run" | "redo"}`` of the selected stages; refuses changed or stale finished stages.

    Everything is checked before anything runs, so a refused recipe changes nothing.
    """
    markers = {s.name: read_marker(s) for s in p.steps}
    selected = {s.name for s in p.selected}
    will_run: set[str] = set()
    plan_: dict[str, str] = {}
    for step in p.selected:
        if step.name in p.redo:
            plan_[step.name] = "redo"
            will_run.add(step.name)
            continue
        marker = markers[step.name]
        for src in step.sources:
            if src not in selected and markers[src] is None:
                raise ConfigError(
                    f"stage {step.name!r} reads the output of {src!r}, which has not finished; run it first "
                    f"(leaf run {p.recipe} --until {src})")
        if marker is None:
            plan_[step.name] = "run"
            will_run.add(step.name)
            continue
        old = marker.get("config", {})
        new = _unchanged_by_new_options(p.configs[step.name], old, settings_of(p.configs[step.name], p.run))
        if old != new:
            raise ConfigError(
                f"stage {step.name!r} finished with other settings: {'; '.join(_differences(old, new))}. "
                f"Restore them, or redo it and the stages after it with --from {step.name}")
        stale = [src for src in step.sources if src in will_run or (
            markers[src] is not None and markers[src].get("finished") != marker.get("upstream", {}).get(src))]
        if stale:
            raise ConfigError(
                f"stage {step.name!r} finished on an earlier output of {stale[0]!r}, which is "
                f"{'being run again' if stale[0] in will_run else 'newer'}; redo it with --from "
                f"{step.name if stale[0] not in will_run else stale[0]}")
        if not _has_output(step):
            plan_[step.name] = "run"  # finished once, output deleted since: run it again
            will_run.add(step.name)
            continue
        plan_[step.name] = "skip"
    return plan_


# -- running ----------------------------------------------------------------------------------


def _merge(step: Step) -> None:
    """Concatenate the files of a multi-source input (several convert or prune stages) into one, ids unique."""
    for key, files in step.merges.items():
        target = Path(step.values[key])
        seen: dict[str, str] = {}
        lines = []
        for f in files:
            for n, line in enumerate(Path(f).read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                rid = str(json.loads(line).get("id"))
                if rid in seen:
                    raise ConfigError(f"stage {step.name!r}: id {rid!r} is in both {seen[rid]} and {f}:{n}; "
                                      "the inputs it concatenates must have distinct ids")
                seen[rid] = f
                lines.append(line + "\n")
        write_atomic(target, "".join(lines))


def _place(src: Path, dst: Path, how: str) -> None:
    """Put ``src`` at ``dst`` for the report: a relative symlink (a copy where links are refused)."""
    if not src.exists():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.is_file():
        dst.unlink()
    elif dst.is_dir():
        shutil.rmtree(dst)
    if how == "folder":
        dst.mkdir()
        for item in sorted(src.iterdir()):
            if item.is_file():
                _place(item, dst / item.name, "link")
        return
    if how == "link":
        try:
            dst.symlink_to(os.path.relpath(src, dst.parent))
            return
        except OSError:
            pass
    shutil.copyfile(src, dst)


def _count(summary: Any, step: Step) -> int | None:
    """How many samples (records, examples) a stage handled, from its summary."""
    kind = step.kind.name
    try:
        if kind == "detect":
            return int(summary.written) + int(summary.resumed)
        if kind == "prune":
            return int(summary.records_written)
        if kind == "analyze":
            return int(summary.models[0]["samples"]) if summary.models else 0
        if kind == "distractors":  # the records of the split later stages read
            return int(summary.records[step.split or DISTRACTOR_SPLIT])
        if kind == "evaluate":
            return sum(int(b.get("total", 0)) for b in summary.results["benchmarks"].values())
        for attr in ("written", "samples", "examples"):  # convert, label, distill / cache-teacher
            value = getattr(summary, attr, None)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
    except (AttributeError, KeyError, TypeError, ValueError, IndexError):
        pass
    return None


def write_stage_yaml(step: Step, config: Any) -> Path:
    """RUN/stages/<name>.yaml: the stage's config as a ``leaf <command> --config`` file."""
    text = f"# {step.name}: leaf {step.kind.command} --config {step.yaml}\n"
    text += yaml.safe_dump(json.loads(dumps(to_dict(config))), sort_keys=False)
    return write_atomic(step.yaml, text)


@dataclass
class StageResult:
    name: str
    kind: str
    status: str  #: ran, resumed, skipped, redone
    seconds: float = 0.0
    samples: int | None = None
    output: str = ""
    line: str = ""


@dataclass
class RunSummary(Summary):
    """What ``leaf run`` did: one row per stage, the evaluation table and the report's path."""

    run: Path
    stages: list[StageResult] = field(default_factory=list)
    table: str = ""
    report: Path | None = None
    text: str = ""  #: --dry-run / --print / --print-commands: what they print

    def line(self) -> str:
        if self.text:
            return self.text
        rows = [("stage", "kind", "status", "seconds", "samples", "output")]
        for r in self.stages:
            rows.append((r.name, r.kind, r.status, f"{r.seconds:.1f}", "-" if r.samples is None else str(r.samples),
                         r.output))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
        out = f"run {self.run}:\n" + "\n".join(lines)
        if self.table:
            out += "\n\n" + self.table
        if self.report is not None:
            out += f"\n\nreport: {self.report}"
        return out


def _say(text: str) -> None:
    print(text, flush=True)


def execute(p: Plan) -> RunSummary:
    """Run the selected stages of a checked plan in order (see the module doc)."""
    actions = check(p)
    summary = RunSummary(p.run)
    n = len(p.steps)
    markers = {s.name: read_marker(s) for s in p.steps}
    for step in p.selected:
        cfg = p.configs[step.name]
        tag = f"[{step.index + 1}/{n}] {step.name}"
        action = actions[step.name]
        if action == "skip":
            old = markers[step.name] or {}
            n_old = old.get("samples")
            _say(f"{tag}: skipped (finished with these settings: {'-' if n_old is None else n_old} samples, "
                 f"{step.output})")
            summary.stages.append(StageResult(step.name, step.kind.name, "skipped", 0.0, old.get("samples"),
                                              str(step.output)))
            continue
        if action == "redo":
            step.marker.unlink(missing_ok=True)
            step.started.unlink(missing_ok=True)
            shutil.rmtree(step.folder, ignore_errors=True)
            for target in step.merges:
                Path(step.values[target]).unlink(missing_ok=True)
        upstream = {src: (markers.get(src) or {}).get("finished") for src in step.sources}
        resumed = action == "run" and step.folder.exists() and any(step.folder.iterdir())
        started = _read_json(step.started)
        if resumed and started is not None and started.get("upstream") != upstream:
            changed = [s for s in upstream if (started.get("upstream") or {}).get(s) != upstream[s]]
            _say(f"{tag}: {', '.join(changed) or 'an input'} finished again since this stage was interrupted: "
                 "starting it over")
            shutil.rmtree(step.folder, ignore_errors=True)
            resumed = False
        step.folder.mkdir(parents=True, exist_ok=True)
        write_atomic(step.started, json.dumps({"stage": step.name, "upstream": upstream}, indent=2) + "\n")
        write_stage_yaml(step, cfg)
        _merge(step)
        if step.kind.name == "report":
            for src, target, how in report_view(step, p.steps):
                _place(src, step.folder / target, how)
        reads = ", ".join(f"{k} {step.values[k]}" for k in ("data", "detections", "counterfactuals", "teacher_cache",
                                                              "samples") if step.values.get(k))
        _say(f"{tag} ({step.kind.name}): {'resuming' if resumed else 'start'}" + (f", reads {reads}" if reads else ""))
        t0 = time.perf_counter()
        try:
            result = step.kind.function()(cfg)
        except SettingsMismatch as exc:
            raise ConfigError(f"stage {step.name!r}: {exc} (the stage was interrupted with other settings: "
                              f"redo it with --from {step.name})") from None
        seconds = time.perf_counter() - t0
        count = _count(result, step)
        stamp = time.time()
        marker = {"stage": step.name, "kind": step.kind.name, "config": settings_of(cfg, p.run),
                  "upstream": upstream,
                  "finished": stamp, "seconds": round(seconds, 3), "samples": count, "output": str(step.output),
                  "summary": result.to_dict() if hasattr(result, "to_dict") else None}
        write_atomic(step.marker, json.dumps(marker, indent=2, default=str) + "\n")
        step.started.unlink(missing_ok=True)
        markers[step.name] = marker
        status = "redone" if action == "redo" else ("resumed" if resumed else "ran")
        _say(f"{tag}: done in {seconds:.1f} s, {'-' if count is None else count} samples, wrote {step.output}")
        line = result.line() if hasattr(result, "line") else ""
        if line:
            _say("    " + line.replace("\n", "\n    "))
        summary.stages.append(StageResult(step.name, step.kind.name, status, seconds, count, str(step.output), line))
    results = [s.output for s in p.steps if s.kind.name == "evaluate" and s.output.is_file()]
    if results:
        from leaf.evaluate import evaluate

        summary.table = evaluate(compare=results).table
    arms = compare_arms_of(p)
    if arms:
        summary.table += "\n\n" + arms
    reports = [s.output for s in p.steps if s.kind.name == "report" and s.output.is_file()]
    summary.report = reports[-1] if reports else None
    return summary


def compare_arms_of(p: Plan) -> str:
    """The recipe's ``arms:`` over seeds (``leaf evaluate --arm``), written to RUN/arms.json; arms whose evaluate
    stages have not all finished are left out and named, and nothing is compared while the first arm is unfinished."""
    arms: dict[str, list[str]] = p.settings.get("arms") or {}
    if not arms:
        return ""
    by_name = {s.name: s for s in p.steps}
    ready = {a: [str(by_name[m].output) for m in ms] for a, ms in arms.items()
             if all(by_name[m].output.is_file() for m in ms)}
    waiting = [a for a in arms if a not in ready]
    note = f"arms not compared yet (their evaluate stages have not all run): {', '.join(waiting)}" if waiting else ""
    first = next(iter(arms))
    if first not in ready:
        return note
    from leaf.evaluate import evaluate

    out = p.run / "arms.json"
    table = evaluate(arm=[f"{a}={','.join(files)}" for a, files in ready.items()], out=out).table
    return table + (f"\n{note}" if note else "")


# -- the other modes ---------------------------------------------------------------------------


def resolved_yaml(p: Plan) -> str:
    """The fully resolved recipe: every stage's kind, inputs and every option, as YAML."""
    doc: dict[str, Any] = {"run": str(p.run), "gpus": p.gpus, "gpu": p.gpu, "stages": {}}
    for step in p.steps:
        entry: dict[str, Any] = {"stage": step.kind.name}
        if step.sources:
            entry["input"] = list(step.sources)
        if step.kind.name == "distill":
            entry["accelerate"] = accelerate_config(step, p.gpus)
        entry.update(json.loads(dumps(to_dict(p.configs[step.name]))))
        doc["stages"][step.name] = entry
    return yaml.safe_dump(doc, sort_keys=False, width=120)


def commands(p: Plan) -> str:
    """The launch command of each selected stage, after writing RUN/stages/<name>.yaml (docs/recipes.md)."""
    lines = [f"# {p.recipe}: one command per stage, in order (run folder {p.run}); each reads the outputs of the "
             "ones before it"]
    for step in p.selected:
        cfg = p.configs[step.name]
        write_stage_yaml(step, cfg)
        lines.append(f"# [{step.index + 1}/{len(p.steps)}] {step.name} ({step.kind.name})")
        for key, files in step.merges.items():
            lines.append(f"mkdir -p {Path(step.values[key]).parent} && cat {' '.join(files)} > {step.values[key]}")
        if step.kind.name == "distill":
            lines.append(f"accelerate launch --config_file {accelerate_config(step, p.gpus)} --num_processes {p.gpus} "
                         f"-m leaf distill --config {step.yaml}")
        elif step.kind.name == "report":
            lines.append(f"leaf run {p.recipe} --only {step.name}  # links the stages' files into {step.folder}")
        else:
            lines.append(f"leaf {step.kind.command} --config {step.yaml}")
    return "\n".join(lines)


def run_recipe(config: RecipeConfig | None = None, **kwargs: Any) -> RunSummary:
    """Run (or ``dry_run`` / ``print_recipe`` / ``print_commands``) a recipe; return what it did."""
    cfg = make(RecipeConfig, config, kwargs, "leaf.run_recipe()")
    p = resolve_plan(cfg)
    if cfg.print_recipe:
        return RunSummary(p.run, text=resolved_yaml(p).rstrip())
    if cfg.print_commands:
        return RunSummary(p.run, text=commands(p))
    if cfg.dry_run:
        from leaf.recipe.estimate import dry_run

        return RunSummary(p.run, text=dry_run(p))
    sys.stdout.flush()
    return execute(p)
