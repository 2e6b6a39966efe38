"""GGUF (quantised) checkpoints as model sources: converted once to a cached Hugging Face folder.

Wherever leaf takes a model, a ``.gguf`` file (or a folder holding exactly one and
no ``config.json``) may be named. :func:`resolve` converts it through transformers'
GGUF path (weights dequantised to float32) into ``$LEAF_CACHE/gguf/<sha256>/``
(default ``~/.cache/leaf/gguf/``), keyed by the file's hash, so a later load reads
the cached folder. The conversion writes a temporary folder and renames it, under
a lock, so two processes never convert the same file at once nor read half a folder.

    python -m leaf.gguf FILE [--out DIR]    # prints the converted folder
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from leaf.config import ConfigError

#: Marker written into every converted folder (source file, hash, architecture, seconds).
MARKER = "leaf_gguf.json"
HINT = "pip install 'leaf[gguf]' (or: pip install gguf)"


class GGUFError(ConfigError):
    """A GGUF source cannot be used: one line naming the file."""


def cache_root() -> Path:
    """Where converted folders live: ``$LEAF_CACHE/gguf`` or ``~/.cache/leaf/gguf``."""
    base = os.environ.get("LEAF_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "leaf") / "gguf"


def fetched_models() -> Path:
    """Where ``scripts/fetch_models.sh`` puts the real checkpoints: ``$LEAF_MODELS`` or ``~/.cache/leaf/models``."""
    return Path(os.environ.get("LEAF_MODELS") or Path.home() / ".cache" / "leaf" / "models")


def gguf_file(path: str | os.PathLike[str]) -> Path | None:
    """The GGUF file ``path`` names (itself, or the one inside a folder without config.json), else None."""
    p = Path(path)
    if p.is_file():
        return p if p.suffix.lower() == ".gguf" else None
    if not p.is_dir() or (p / "config.json").exists():
        return None
    found = sorted(f for f in p.iterdir() if f.suffix.lower() == ".gguf" and f.is_file())
    if len(found) > 1:
        raise GGUFError(f"{p}: holds {len(found)} .gguf files ({', '.join(f.name for f in found)}); name one of them")
    return found[0] if found else None


def sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 8 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(8 << 20), b""):
            h.update(block)
    return h.hexdigest()


def metadata(path: Path) -> dict[str, Any]:
    """The GGUF fields leaf reads (architecture, name, chat template); needs the ``gguf`` package."""
    try:
        from gguf import GGUFReader
    except ImportError:
        raise GGUFError(f"{path}: reading a GGUF file needs the gguf package: {HINT}") from None
    try:
        reader = GGUFReader(str(path))
    except (ValueError, OSError) as exc:
        raise GGUFError(f"{path}: not a readable GGUF file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    out: dict[str, Any] = {}
    for key, name in (("general.architecture", "architecture"), ("general.name", "name"),
                      ("tokenizer.chat_template", "chat_template")):
        field = reader.fields.get(key)
        if field is not None and field.data:
            out[name] = bytes(field.parts[field.data[0]]).decode("utf-8")
    return out


def supported_architectures() -> list[str]:
    """Architectures transformers' GGUF loader converts (empty when the list cannot be read)."""
    try:
        from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES
    except ImportError:
        return []
    return list(GGUF_SUPPORTED_ARCHITECTURES)


def convert(path: Path, out: Path, meta: dict[str, Any] | None = None, digest: str | None = None) -> Path:
    """Convert the GGUF file ``path`` to a Hugging Face folder at ``out`` (written aside, then renamed)."""
    meta = meta if meta is not None else metadata(path)
    arch = meta.get("architecture", "?")
    known = supported_architectures()
    # transformers names Gemma 3's text model gemma3_text in its table
    if known and arch not in known and f"{arch}_text" not in known:
        raise GGUFError(f"{path}: GGUF architecture {arch!r} is not supported by transformers' GGUF loader "
                        f"(supported: {', '.join(sorted(known))})")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except Exception as exc:  # noqa: BLE001 - the tokenizers library raises plain Exception on a bad vocabulary
        first = " ".join(str(exc).strip().split("\n", 1)[0].split()) or type(exc).__name__
        raise GGUFError(f"{path}: cannot convert the GGUF file ({first})") from None
    # the weights are dequantised float32 now: drop the GGUF quantizer so save_pretrained writes them plainly
    model.hf_quantizer = None
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    if meta.get("chat_template") and not getattr(tok, "chat_template", None):
        tok.chat_template = meta["chat_template"]
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        record = {"source": str(path.resolve()), "sha256": digest or sha256(path), "bytes": path.stat().st_size,
                  "architecture": arch, "name": meta.get("name"), "seconds": round(time.perf_counter() - start, 1)}
        (tmp / MARKER).write_text(json.dumps(record, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def cached(path: str | os.PathLike[str]) -> str | None:
    """The converted folder of a GGUF source when already in the cache (nothing is converted), else None."""
    try:
        source = gguf_file(path)
    except GGUFError:
        return None
    out = cache_root() / sha256(source) if source is not None else None
    return str(out) if out is not None and (out / MARKER).exists() else None


def resolve(path: str | os.PathLike[str]) -> str:
    """A Hugging Face folder for ``path``: the cached conversion of a GGUF source, else ``path`` unchanged."""
    source = gguf_file(path)
    if source is None:
        return str(path)
    meta = metadata(source)  # the gguf package is needed (and checked) before any hashing
    digest = sha256(source)
    root = cache_root()
    out = root / digest
    if (out / MARKER).exists():
        return str(out)
    root.mkdir(parents=True, exist_ok=True)
    with (root / f"{digest}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits, then finds the folder done
        if not (out / MARKER).exists():
            convert(source, out, meta, digest)
    return str(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leaf.gguf", description="Convert a GGUF file to a Hugging Face folder.")
    parser.add_argument("file", help="a .gguf file, or a folder holding one")
    parser.add_argument("--out", help="write the folder here instead of the hash-keyed cache (kept when already converted)")
    args = parser.parse_args(argv)
    try:
        if args.out:
            source = gguf_file(args.file)
            if source is None:
                raise GGUFError(f"{args.file}: not a .gguf file nor a folder holding one")
            out = Path(args.out)
            if not (out / MARKER).exists():
                out.parent.mkdir(parents=True, exist_ok=True)
                convert(source, out)
            print(out)
        else:
            print(resolve(args.file))
    except GGUFError as exc:
        print(f"leaf.gguf: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
