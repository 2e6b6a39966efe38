"""Before/after check of a refactor: does ``leaf demo --quick --setting v1`` give the same results?

A developer runs it on ONE machine, with one thread count, before and after a change of code::

    python tests/demo/golden.py record            # before: runs the quick demo, records it
    ... change the code ...
    python tests/demo/golden.py check             # after: runs it again; exit 1 listing what differs

(``record FILE`` / ``check FILE`` choose the recording, default ``.leaf-golden/demo-quick-v1.json.gz``,
which git ignores; ``--run RUN --cache CACHE`` snapshots a run already made instead of running the demo,
and the machine it notes is then the one running this script.)
Each run trains its tiny models from scratch in a temporary folder (about three minutes on 2 cores).

It is not a CI test: the tiny models train to other weights on another CPU or with another
``OMP_NUM_THREADS`` (a recording made on one x86 machine differed from a run on another in 86 result
fields), so a recording only says something on the machine and thread count that made it. ``check``
warns when those differ from the recording's. What CI asserts on every machine instead is in
``tests/demo/test_pipeline.py``.

What "the same" means:

* the results (``results.json``: accuracies, detection quality, attention,
  counts) are equal exactly;
* in every result file, every string, integer, boolean, key and list length is
  equal exactly (ids, texts, flags, spans, counterfactual records, verdicts);
* floating-point values (saliencies, scores, losses) are equal to 1 % of the
  largest magnitude that field takes in that file: a change of summation order
  (chunked output heads) moves the last digits of small
  gradients, which is not a change of result.

Left out on purpose: sidecars (``*.meta.json``, which carry the schema version),
training logs (``metrics.*``, which hold throughput), model weights and the HTML
report (its layout is not a result), timings and the models' cache location.
Machine-specific folders inside files are replaced by placeholders.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

SKIP_SUFFIXES = (".meta.json", ".png", ".html", ".md")
RECORDING = Path(__file__).resolve().parents[2] / ".leaf-golden" / "demo-quick-v1.json.gz"
RELATIVE = 1e-2
SHOWN = 100  # differences ``check`` prints


def result_files(run: Path) -> list[Path]:
    files = []
    for path in sorted(run.rglob("*")):
        rel = path.relative_to(run)
        if not path.is_file() or rel.parts[0] in ("results.json", "demo_settings.json"):
            continue
        if any(part.startswith("train-") for part in rel.parts) or path.name.endswith(SKIP_SUFFIXES):
            continue
        if path.suffix in (".json", ".jsonl"):
            files.append(path)
    return files


def _content(path: Path, places: dict[str, str]) -> Any:
    text = path.read_text(encoding="utf-8")
    for folder, name in places.items():
        text = text.replace(folder, name)
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return json.loads(text)


def machine() -> dict[str, Any]:
    """What a recording depends on besides the code: the CPU, the thread count and the library versions."""
    import torch

    cpu = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines() if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    return {"cpu": cpu, "arch": platform.machine(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}


def snapshot(run: str | Path, cache: str | Path) -> dict[str, Any]:
    run = Path(run)
    places = {str(run.resolve()): "<RUN>", str(run): "<RUN>", str(Path(cache).resolve()): "<CACHE>",
              str(cache): "<CACHE>"}
    results = json.loads((run / "results.json").read_text())
    return {
        "machine": machine(),
        "seeds": results["seeds"],
        "summary": results["summary"],
        "files": {str(p.relative_to(run)): _content(p, places) for p in result_files(run)},
    }


def _float_scales(obj: Any, key: str = "", out: dict[str, float] | None = None) -> dict[str, float]:
    """The largest magnitude of the floats stored under each key name."""
    out = {} if out is None else out
    if isinstance(obj, dict):
        for k, v in obj.items():
            _float_scales(v, k, out)
    elif isinstance(obj, list):
        for v in obj:
            _float_scales(v, key, out)
    elif isinstance(obj, float) and math.isfinite(obj):
        out[key] = max(out.get(key, 0.0), abs(obj))
    return out


def _diff(want: Any, got: Any, where: str, key: str, scales: dict[str, float], found: list[str]) -> None:
    if isinstance(want, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
        if not math.isclose(want, got, rel_tol=0.0, abs_tol=RELATIVE * scales.get(key, abs(want)) + 1e-12):
            found.append(f"{where}: {want!r} -> {got!r}")
    elif type(want) is not type(got):
        found.append(f"{where}: {type(want).__name__} -> {type(got).__name__}")
    elif isinstance(want, dict):
        if set(want) != set(got):
            found.append(f"{where}: keys {sorted(set(want) ^ set(got))}")
        for k in want.keys() & got.keys():
            _diff(want[k], got[k], f"{where}.{k}", k, scales, found)
    elif isinstance(want, list):
        if len(want) != len(got):
            found.append(f"{where}: {len(want)} items -> {len(got)}")
        for i, (a, b) in enumerate(zip(want, got)):
            _diff(a, b, f"{where}[{i}]", key, scales, found)
    elif want != got:
        found.append(f"{where}: {want!r} -> {got!r}")


class _Exact(dict):
    """Float scales of zero: the results are compared exactly."""

    def get(self, key: Any, default: Any = None) -> float:
        return 0.0


def differences(golden: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """Where ``got`` differs from ``golden`` (empty: the same run); results exact, files as the module says."""
    found = []
    for part in ("seeds", "summary"):
        if golden[part] != got[part]:
            found.append(f"results: {part} differs")
            _diff(golden[part], got[part], f"results.{part}", "", _Exact(), found)
    for name in sorted(golden["files"].keys() | got["files"].keys()):
        if name not in golden["files"] or name not in got["files"]:
            found.append(f"{name}: only in the {'recorded' if name in golden['files'] else 'new'} run")
            continue
        scales = _float_scales(golden["files"][name])
        _diff(golden["files"][name], got["files"][name], name, "", scales, found)
    return found


def write(data: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(json.dumps(data, sort_keys=True, ensure_ascii=False).encode("utf-8"), 9, mtime=0))


def read(path: Path) -> dict[str, Any]:
    return json.loads(gzip.decompress(path.read_bytes()))


def run_demo(run: Path, cache: Path) -> None:
    from leaf.cli import main

    if main(["demo", "--quick", "--setting", "v1", "--out", str(run), "--cache-dir", str(cache)]) != 0:
        raise SystemExit("leaf demo failed")


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="record a quick v1 demo run before a change; check it after")
    parser.add_argument("action", choices=["record", "check"])
    parser.add_argument("file", nargs="?", type=Path, default=RECORDING, help=f"the recording (default {RECORDING})")
    parser.add_argument("--run", type=Path, help="snapshot this finished run instead of running the demo")
    parser.add_argument("--cache", type=Path, help="the --cache-dir of --run")
    args = parser.parse_args(argv)
    if (args.run is None) != (args.cache is None):
        parser.error("--run and --cache go together")
    if args.action == "check" and not args.file.is_file():
        parser.error(f"no recording {args.file}: run 'record' before the change")
    with tempfile.TemporaryDirectory(prefix="leaf-golden-") as tmp:
        run, cache = args.run, args.cache
        if run is None:
            run, cache = Path(tmp) / "run", Path(tmp) / "cache"
            run_demo(run, cache)
        got = json.loads(json.dumps(snapshot(run, cache)))
    if args.action == "record":
        write(got, args.file)
        print(f"recorded {args.file} ({args.file.stat().st_size} bytes) on {got['machine']}")
        return 0
    want = read(args.file)
    if want.get("machine") != got["machine"]:
        print(f"warning: recorded on {want.get('machine')}, checked on {got['machine']}: "
              "the tiny models train to other weights there, so differences are expected", file=sys.stderr)
    found = differences(want, got)
    shown = found[:SHOWN] + ([f"... and {len(found) - SHOWN} more differences"] if len(found) > SHOWN else [])
    print("\n".join(shown) if found else "the same run as recorded")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(cli())
