"""Arms over seeds: several results files per arm (one per seed), compared problem by problem with the first arm.

An *arm* is one way of training a model (KD, LeaF, ...), run at one or more
seeds; each seed's model was evaluated into its own results file on the same
benchmarks. :func:`compare_arms` gives, per arm and benchmark, the accuracy's
mean and sample standard deviation over its seeds, and against the first arm
(the baseline) the paired comparison of :func:`leaf.stats.paired`: seed ``i``
of an arm is paired with seed ``i`` of the baseline (the same test problems),
the accuracy differences give a mean and spread, and an exact McNemar test
runs on the discordant problems of each seed and of all seeds pooled. An arm
with fewer seeds than the baseline is paired with the baseline's first seeds.

``leaf evaluate --arm KD=a.json,b.json --arm LeaF=c.json,d.json`` prints the
tables (and writes the JSON below to ``--out``); a recipe's ``arms:`` key names
evaluate stages instead of files (docs/recipes.md). The JSON::

    {"baseline": "KD", "benchmarks": ["bench", ...],
     "arms": {"KD": {"files": [...], "seeds": 3,
                     "accuracy": {"bench": {"mean": 0.61, "std": 0.02, "per_seed": [...]}},
                     "vs_baseline": {"bench": {"diff_mean": points, "diff_std": ..., "wins": n, "losses": n,
                                               "pooled_p": p, "only_arm": n, "only_baseline": n,
                                               "seeds": [{"diff", "only_a", "only_b", "n", "p"}]}}}}}
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from leaf.config import ConfigError
from leaf.data.records import DataError
from leaf.stats import paired


def parse_arm(text: str) -> tuple[str, list[Path]]:
    """``NAME=FILE[,FILE...]`` (one results file per seed) -> ``(name, files)``; one line naming the flag if not."""
    name, sep, files = text.partition("=")
    paths = [Path(f.strip()) for f in files.split(",") if f.strip()]
    if not sep or not name.strip() or not paths:
        raise ConfigError(f"--arm {text!r}: expected NAME=RESULTS.json[,RESULTS.json...] (one file per seed)")
    return name.strip(), paths


def _verdicts(path: Path) -> dict[str, dict[str, bool]]:
    """benchmark -> problem id -> correct, from a results file's per-problem records."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError([f"{path}: file not found"]) from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DataError([f"{path}: not a results file (not JSON)"]) from None
    records = data.get("records") if isinstance(data, dict) else None
    if not isinstance(records, list):
        raise DataError([f"{path}: not a results file with per-problem records ('records')"])
    out: dict[str, dict[str, bool]] = {}
    for k, r in enumerate(records):
        try:
            out.setdefault(str(r["benchmark"]), {})[str(r["id"])] = bool(r["correct"])
        except (KeyError, TypeError):
            raise DataError([f"{path}: records[{k}]: needs 'benchmark', 'id' and 'correct'"]) from None
    return out


def compare_arms(arms: Mapping[str, Sequence[str | Path]]) -> dict[str, Any]:
    """The comparison of the module doc; the first arm is the baseline."""
    if not arms:
        raise ConfigError("--arm: give at least one arm")
    loaded = {name: [(Path(p), _verdicts(Path(p))) for p in files] for name, files in arms.items()}
    baseline = next(iter(loaded))
    benchmarks = list(dict.fromkeys(b for runs in loaded.values() for _, v in runs for b in v))
    result: dict[str, Any] = {"baseline": baseline, "benchmarks": benchmarks, "arms": {}}
    base = loaded[baseline]
    for name, runs in loaded.items():
        if len(runs) > len(base):
            raise DataError([f"arm {name!r}: {len(runs)} seeds, the baseline {baseline!r} only {len(base)}"])
        accuracy, versus = {}, {}
        for bench in benchmarks:
            missing = [str(p) for p, v in runs if bench not in v]
            if missing:
                raise DataError([f"{p}: no records of benchmark {bench!r} (arm {name!r})" for p in missing])
            per_seed = [sum(v[bench].values()) / len(v[bench]) if v[bench] else 0.0 for _, v in runs]
            accuracy[bench] = {"mean": statistics.fmean(per_seed),
                               "std": statistics.stdev(per_seed) if len(per_seed) > 1 else 0.0,
                               "per_seed": per_seed}
            if name == baseline:
                continue
            try:
                stats = paired([v[bench] for _, v in runs], [v[bench] for _, v in base[:len(runs)]])
            except ValueError:
                raise DataError([f"arm {name!r} vs {baseline!r}, {bench}: the files scored different problems"]) \
                    from None
            stats["only_arm"], stats["only_baseline"] = stats.pop("only_a"), stats.pop("only_b")
            versus[bench] = stats
        entry: dict[str, Any] = {"files": [str(p) for p, _ in runs], "seeds": len(runs), "accuracy": accuracy}
        if name != baseline:
            entry["vs_baseline"] = versus
        result["arms"][name] = entry
    return result


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """The lines of a Markdown table: the first column left-aligned, the others right-aligned (numbers)."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths))) + " |"

    sep = "|" + "|".join(("-" * (w + 2)) if i == 0 else ("-" * (w + 1) + ":") for i, w in enumerate(widths)) + "|"
    return [line(header), sep, *(line(r) for r in rows)]


def arms_text(result: Mapping[str, Any]) -> str:
    """Two Markdown tables: accuracy (%) per arm over seeds; each arm against the baseline, paired."""
    benches, baseline = result["benchmarks"], result["baseline"]
    acc_rows, vs_rows = [], []
    for name, arm in result["arms"].items():
        cells = [name, str(arm["seeds"])]
        for b in benches:
            a = arm["accuracy"][b]
            cells.append(f"{100 * a['mean']:.1f} ± {100 * a['std']:.1f}" if arm["seeds"] > 1 else f"{100 * a['mean']:.1f}")
        acc_rows.append(cells)
        if name == baseline:
            continue
        cells = [name, str(arm["seeds"])]
        for b in benches:
            s = arm["vs_baseline"][b]
            spread = f" ± {s['diff_std']:.1f}" if arm["seeds"] > 1 else ""
            cells.append(f"{s['diff_mean']:+.1f}{spread} ({s['wins']}/{s['losses']}; {s['only_arm']} vs "
                         f"{s['only_baseline']}, p {s['pooled_p']:.2g})")
        vs_rows.append(cells)
    out = ["Arms over seeds: accuracy % (mean ± sd over seeds)", "",
           *markdown_table(["Arm", "seeds", *benches], acc_rows)]
    if vs_rows:
        out += ["", f"Against {baseline}, paired by seed: points (seeds better/worse; problems only the arm vs only "
                    f"{baseline} solves, pooled exact McNemar p)", "",
                *markdown_table(["Arm", "seeds", *benches], vs_rows)]
    return "\n".join(out)


__all__ = ["arms_text", "compare_arms", "markdown_table", "parse_arm"]
