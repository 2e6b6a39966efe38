"""Does the demo benchmark make LeaF's premise real?

Builds (or reuses from the cache) the demo's tokenizer, teacher and student,
then measures greedy exact-match accuracy of both models on held-out clean,
confounded and counterfactual test sets of every task family, and prints a
table with timings. The targets (issue 6): teacher counterfactual accuracy
>= 90 %; the student loses >= 20 points from clean to counterfactual.

    python benchmarks/demo_premise.py [--quick] [--n 200] [--force] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict

from leaf.demo.greedy import accuracy
from leaf.demo.models import QUICK, DemoModelsConfig, build
from leaf.demo.tasks import SPLITS, held_out_sets


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the --quick models")
    parser.add_argument("--n", type=int, default=200, help="test problems per family and split")
    parser.add_argument("--force", action="store_true", help="retrain even if cached")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()

    cfg = QUICK if args.quick else DemoModelsConfig()
    t0 = time.perf_counter()
    built = build(cfg, cache_dir=args.cache_dir, force=args.force)
    build_s = time.perf_counter() - t0
    tok, teacher, student = built.load()

    t0 = time.perf_counter()
    rows = []
    sets = held_out_sets(cfg.families, args.n)
    for family in cfg.families:
        for split in SPLITS:
            recs = sets[f"{family}/{split}"]
            rows.append(
                {
                    "family": family,
                    "split": split,
                    "teacher": accuracy(teacher, tok, recs),
                    "student": accuracy(student, tok, recs),
                }
            )
    eval_s = time.perf_counter() - t0

    print(f"models: {built.root} ({'cached' if built.cached else 'built'}; build {build_s:.0f}s, "
          f"timings {', '.join(f'{k} {v:.0f}s' for k, v in built.timings.items())})")
    print(f"teacher {cfg.teacher}\nstudent {cfg.student}")
    print("\n| family | split | teacher | student |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['family']} | {r['split']} | {100 * r['teacher']:.1f} | {100 * r['student']:.1f} |")
    print("\n| family | teacher cf >= 90 | student clean - cf (pts) | premise |\n|---|---|---|---|")
    verdicts = {}
    for family in cfg.families:
        acc = {(r["split"], m): r[m] for r in rows if r["family"] == family for m in ("teacher", "student")}
        t_cf = acc["counterfactual", "teacher"]
        gap = 100 * (acc["clean", "student"] - acc["counterfactual", "student"])
        ok = t_cf >= 0.9 and gap >= 20
        verdicts[family] = {"teacher_cf": t_cf, "student_gap_pts": gap, "premise": ok}
        print(f"| {family} | {100 * t_cf:.1f} | {gap:+.1f} | {'yes' if ok else 'no'} |")
    print(f"\neval {eval_s:.0f}s ({args.n} problems per family and split)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"config": asdict(cfg), "timings": built.timings, "build_s": build_s, "eval_s": eval_s,
                       "rows": rows, "premise": verdicts}, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
