"""One definition per command: a config dataclass drives the CLI, YAML and Python API.

Each field of a config dataclass is declared with :func:`option`, which records
its help text (and optional CLI aliases / choices). From that single definition

* :func:`add_options` builds the ``argparse`` flags of a subcommand,
* :func:`load_yaml` reads a YAML file of the same keys (unknown keys are an error
  that names the file and the key),
* :func:`resolve` merges defaults < YAML < explicit CLI flags into an instance.

The Python API takes the dataclass itself (or keyword arguments of the same
names), so the three ways of configuring a run cannot drift apart. Every stage
function calls :func:`make`, which gives them one contract: a config *or*
keyword arguments, both checked the same way (types, choices, ranges, finite
numbers, the class's own ``validate``), unknown names refused.

Aliases (``option(aliases=["output_dir"])``) are other names of a field: each
is a flag (``--output-dir``), a YAML key and a keyword argument, so the names
users know from transformers / TRL (``num_train_epochs``,
``per_device_train_batch_size``, ...) work wherever a leaf name does.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong type."""


class MissingExtra(ConfigError):
    """A package a command needs is not installed; the one-line message names the extra to install.

    A ``ConfigError``, so the command line prints it as one line (no traceback) and exits with status 2.
    """


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    choices: typing.Sequence[Any] | None = None,
    aliases: typing.Sequence[str] = (),
    low: float | None = None,
    high: float | None = None,
    role: str | None = None,
    check: typing.Callable[[Any], None] | None = None,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field with CLI metadata.

    ``help`` is shown by ``--help``; ``choices`` and the inclusive bounds
    ``low`` / ``high`` are checked for flags, YAML and keyword arguments alike;
    ``aliases`` are other names of the field (flags, YAML keys, keyword arguments).
    ``role`` is ``"input"`` or ``"output"`` for paths: an output that resolves to
    an input (symlinks and relative paths included) is refused, whatever
    ``--overwrite`` says. ``check`` is called with each value (not ``None``) and
    raises ``ValueError`` with a message the error then prefixes with the option.
    """
    if role not in (None, "input", "output"):
        raise ValueError(f"role must be input or output, got {role!r}")
    names = tuple(a.lstrip("-").replace("-", "_") for a in aliases)
    metadata = {"help": help, "choices": choices, "aliases": names, "low": low, "high": high, "role": role,
                "check": check}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _base_type(tp: Any) -> tuple[Any, bool]:
    """Strip ``Optional``; return (type, is_optional)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        if len(args) == 1:
            return args[0], optional
        return args, optional
    return tp, False


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parse_bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _parse_json_like(text: str) -> Any:
    return yaml.safe_load(text)


def is_required(f: dataclasses.Field) -> bool:  # type: ignore[type-arg]
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def default_of(f: dataclasses.Field) -> Any:  # type: ignore[type-arg]
    """The default value of an option that has one (a fresh one from its factory)."""
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def add_options(parser: argparse.ArgumentParser, cls: type, *, require: bool = True) -> None:
    """Add one flag per field of ``cls``; unset flags stay ``None`` so YAML can fill them.

    With ``require`` (no ``--config`` file on the command line), fields without a
    default are required flags, and usage shows them so.
    """
    hints = typing.get_type_hints(cls)
    required = parser.add_argument_group("required options") if require else parser
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp, _ = _base_type(hints[f.name])
        meta = f.metadata
        help_text = meta.get("help", "")
        help_text += " (required)" if is_required(f) else f" (default: {default_of(f)})"
        flags = [_flag(f.name), *(_flag(a) for a in meta.get("aliases", ()))]
        kwargs: dict[str, Any] = {"dest": f.name, "default": None, "help": help_text.replace("%", "%%")}
        if require and is_required(f):
            kwargs["required"] = True
        if meta.get("choices"):
            kwargs["choices"] = list(meta["choices"])
        origin = typing.get_origin(tp)
        if tp is bool:
            kwargs.update(nargs="?", const=True, type=_parse_bool, metavar="BOOL")
        elif tp in (int, float, str):
            kwargs["type"] = tp
        elif tp is Path:
            kwargs["type"] = Path
        elif origin in (list, tuple):
            (item,) = typing.get_args(tp)[:1] or (str,)
            # extend: a repeated flag (--model A --model B) accumulates instead of overwriting.
            kwargs.update(nargs="+", action="extend", type=item if item in (int, float, str) else str)
        elif isinstance(tp, list):  # e.g. str | int
            kwargs["type"] = _parse_json_like
        else:
            kwargs["type"] = _parse_json_like
        (required if kwargs.get("required") else parser).add_argument(*flags, **kwargs)


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping naming one key twice (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may override keys on purpose
                continue
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice (which value is meant?)", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml_mapping(path: str | Path, what: str, shape: str) -> dict[str, Any]:
    """A YAML file holding a mapping (empty file: empty mapping); one-line errors naming the file."""
    path = Path(path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: {exc.problem}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected {shape}")
    return data


def load_yaml(path: str | Path, cls: type) -> dict[str, Any]:
    """Read a YAML mapping whose keys are field names of ``cls`` (dashes allowed)."""
    data = read_yaml_mapping(path, "config file", "a mapping of option names to values")
    return canonical_names(cls, data, str(path))


def field_names(cls: type) -> dict[str, str]:
    """Every accepted name of ``cls``'s options (field names and aliases) -> field name."""
    names: dict[str, str] = {}
    for f in dataclasses.fields(cls):
        if f.init:
            names[f.name] = f.name
            for alias in f.metadata.get("aliases", ()):
                names[alias] = f.name
    return names


def canonical_names(cls: type, values: dict[str, Any], source: str) -> dict[str, Any]:
    """``values`` keyed by field names (dashes and aliases resolved); unknown names are an error."""
    names = field_names(cls)
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = names.get(str(key).replace("-", "_"))
        if name is None:
            known = ", ".join(sorted(f.name for f in dataclasses.fields(cls) if f.init))
            raise ConfigError(f"{source}: unknown option {key!r} for {cls.__name__}; known: {known}")
        if name in out and out[name] != value:
            raise ConfigError(f"{source}: option {name!r} given twice (as {key!r} and another name)")
        out[name] = value
    return out


def build(cls: type[T], values: dict[str, Any], source: str = "arguments") -> T:
    """Instantiate ``cls`` from ``values``: names, types, choices, bounds and ``validate()`` checked."""
    values = canonical_names(cls, values, source)
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init or f.name not in values:
            continue
        value = values[f.name]
        tp, optional = _base_type(hints[f.name])
        kwargs[f.name] = _coerce(value, tp, optional, f.name, source)
        _check_value(f, kwargs[f.name], source)
    missing = [_flag(f.name) for f in dataclasses.fields(cls) if f.init and f.name not in kwargs and is_required(f)]
    if missing:
        raise ConfigError(f"{source}: missing required option(s): {', '.join(missing)}")
    _check_outputs(cls, kwargs, source)
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    return obj


def _check_value(f: dataclasses.Field, value: Any, source: str) -> None:  # type: ignore[type-arg]
    """Choices, inclusive bounds and finiteness of one coerced value (lists: each item)."""
    meta = f.metadata
    for item in value if isinstance(value, (list, tuple)) else [value]:
        if item is None:
            continue
        choices = meta.get("choices")
        if choices and item not in choices:
            raise ConfigError(
                f"{source}: option {f.name!r}: {item!r} is not one of {', '.join(map(str, choices))}"
            )
        if isinstance(item, float) and not math.isfinite(item):
            raise ConfigError(f"{source}: option {f.name!r}: {item!r} is not a finite number")
        low, high = meta.get("low"), meta.get("high")
        if isinstance(item, (int, float)) and not isinstance(item, bool):
            if (low is not None and item < low) or (high is not None and item > high):
                bounds = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
                raise ConfigError(f"{source}: option {f.name!r}: {item!r} is outside {bounds}")
        if meta.get("check") is not None:
            try:
                meta["check"](item)
            except ValueError as exc:
                raise ConfigError(f"{source}: option {f.name!r}: {exc}") from None


def _paths(value: Any) -> list[Path]:
    """The local paths named by an option value (``NAME=PATH`` specs included; hub names are not paths)."""
    out = []
    for item in value if isinstance(value, (list, tuple)) else [value]:
        if item is None:
            continue
        text = str(item).split("=", 1)[1] if isinstance(item, str) and "=" in str(item) else str(item)
        out.append(Path(text).expanduser())
    return out


def _resolve(path: Path, name: str, source: str) -> Path:
    """``path.resolve()``; a symlink loop (or a path the system cannot follow) is a one-line error naming it."""
    try:
        return path.resolve()
    except (RuntimeError, OSError) as exc:  # Python < 3.13 raises RuntimeError for a loop
        reason = "a symlink loop" if "loop" in str(exc).lower() else " ".join(str(exc).split())
        raise ConfigError(f"{source}: {_flag(name)} {path}: cannot follow the path ({reason})") from None


#: Options whose value, when it is a local folder, is a model: every file inside it is an input.
MODEL_OPTIONS = ("teacher", "student", "model", "models")
#: Names a command writes beside an output (resume files, sidecars): each must miss every input too.
SIDECARS = ("", ".new", ".meta.json", ".skipped.jsonl", ".uncovered.jsonl", ".summary.json", ".lock")


def _special(path: Path) -> bool:
    """An existing path that is neither a regular file nor a folder (device, FIFO, socket)."""
    try:
        return path.exists() and not (path.is_file() or path.is_dir())
    except OSError:
        return False


def _check_outputs(cls: type, values: dict[str, Any], source: str) -> None:
    """Refuse any path a run writes that resolves to, or lies in, an input: a run never destroys what it reads.

    Inputs are the ``role="input"`` options plus model options naming a local folder
    (every file inside counts). Each output is checked with its sidecar names
    (:data:`SIDECARS`); an output folder that holds an input is refused, and so are
    inputs and outputs that exist but are not regular files or folders.
    """
    roles = {f.name: f.metadata.get("role") for f in dataclasses.fields(cls) if f.init}
    inputs: dict[str, list[Path]] = {}
    folders: dict[str, list[Path]] = {}
    for name, role in roles.items():
        if role == "input":
            inputs[name] = [_resolve(p, name, source) for p in _paths(values.get(name))]
        elif name in MODEL_OPTIONS:
            folders[name] = [_resolve(p, name, source) for p in _paths(values.get(name)) if p.is_dir()]
    for in_name, paths in inputs.items():
        for path in paths:
            if _special(path):
                raise ConfigError(f"{source}: {_flag(in_name)} {path} is not a regular file or folder")
    for name, role in roles.items():
        if role != "output":
            continue
        for out in _paths(values.get(name)):
            if _special(out):
                raise ConfigError(f"{source}: {_flag(name)} {out} exists and is not a regular file or folder")
            base = _resolve(out, name, source)
            for suffix in SIDECARS:
                target = base.with_name(base.name + suffix) if suffix else base
                for in_name, paths in inputs.items():
                    if target in paths:
                        what = f"{out}" if not suffix else f"{out} (which writes {target.name})"
                        raise ConfigError(
                            f"{source}: {_flag(name)} {what} is the input {_flag(in_name)}: refusing to overwrite an "
                            "input (choose another output path)"
                        )
                for in_name, paths in folders.items():
                    for folder in paths:
                        if target == folder or folder in target.parents:
                            raise ConfigError(
                                f"{source}: {_flag(name)} {out} is inside the model folder {_flag(in_name)} {folder}: "
                                "refusing to overwrite an input (choose another output path)"
                            )
            for in_name, paths in {**inputs, **folders}.items():
                for path in paths:
                    if base in path.parents:
                        raise ConfigError(
                            f"{source}: {_flag(name)} {out} is a folder holding the input {_flag(in_name)} {path}: "
                            "refusing to overwrite an input (choose another output path)"
                        )


def make(cls: type[T], config: T | None = None, kwargs: dict[str, Any] | None = None, where: str = "") -> T:
    """The one contract of every stage function: a ``cls`` instance *or* keyword arguments, never both.

    Either way the values go through :func:`build` (names, types, choices,
    bounds, ``validate()``), so a config built in Python is checked exactly
    like one read from flags or YAML.
    """
    where = where or f"{cls.__name__}"
    if config is not None and kwargs:
        raise ConfigError(f"{where}: pass a {cls.__name__} or keyword arguments, not both")
    if config is None:
        return build(cls, dict(kwargs or {}), where)
    if not isinstance(config, cls):
        raise ConfigError(f"{where}: expected a {cls.__name__}, got {type(config).__name__}")
    return build(cls, {f.name: getattr(config, f.name) for f in dataclasses.fields(cls) if f.init}, where)


def _coerce(value: Any, tp: Any, optional: bool, name: str, source: str) -> Any:
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{source}: option {name!r} may not be null")
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str):
                return _parse_bool(value)
            raise TypeError
        if tp is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if tp is float:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if tp is str:
            if isinstance(value, (dict, list)):
                raise TypeError
            return str(value)
        if tp is Path:
            return Path(value)
        origin = typing.get_origin(tp)
        if origin in (list, tuple):
            if not isinstance(value, (list, tuple)):
                value = [value]
            args = typing.get_args(tp)
            item = args[0] if args else Any
            items = [_coerce(v, item, False, name, source) if item in (int, float, str, Path) else v for v in value]
            return list(items) if origin is list else tuple(items)
    except (TypeError, ValueError, argparse.ArgumentTypeError):
        raise ConfigError(f"{source}: option {name!r}: cannot read {value!r} as {getattr(tp, '__name__', tp)}") from None
    return value


def resolve(cls: type[T], args: argparse.Namespace) -> T:
    """Merge dataclass defaults < ``--config`` YAML < explicit CLI flags."""
    values: dict[str, Any] = {}
    source = "command line"
    config_path = getattr(args, "config", None)
    if config_path:
        values.update(load_yaml(config_path, cls))
        source = f"{config_path} + command line"
    for f in dataclasses.fields(cls):
        if f.init and getattr(args, f.name, None) is not None:
            values[f.name] = getattr(args, f.name)
    return build(cls, values, source)


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON/YAML-safe dict of a config dataclass (paths as strings)."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, (list, tuple)):
            value = [str(v) if isinstance(v, Path) else v for v in value]
        out[f.name] = str(value) if isinstance(value, Path) else value
    return out


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, *, require: bool = True) -> None:
    """``--config FILE.yaml`` plus one flag per field of ``cls`` (flags override the file)."""
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help=f"YAML file of {cls.__name__} options (keys as the flags, - or _); flags given here override it",
    )
    add_options(parser, cls, require=require)


class Summary:
    """What every stage function returns: a dataclass that prints as one line (or a short block).

    ``to_dict()`` gives the JSON-safe fields, for callers that log or store it.
    """

    def line(self) -> str:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        import json

        return json.loads(json.dumps(dataclasses.asdict(self), default=str))  # type: ignore[call-overload]


def options_markdown(cls: type) -> str:
    """The options of ``cls`` as a markdown table (docs keep one per command; a test keeps them current)."""
    rows = ["| option (YAML key) | flag | default | meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        meta = f.metadata
        names = [f"`{_flag(f.name)}`", *(f"`{_flag(a)}`" for a in meta.get("aliases", ()))]
        default = "required" if is_required(f) else f"`{default_of(f)}`"
        help_text = meta.get("help", "")
        if meta.get("choices"):
            help_text += f" (one of: {', '.join(map(str, meta['choices']))})"
        bounds = [f">= {meta['low']}" if meta.get("low") is not None else "",
                  f"<= {meta['high']}" if meta.get("high") is not None else ""]
        if any(bounds):
            help_text += f" ({', '.join(b for b in bounds if b)})"
        rows.append(f"| `{f.name}` | {', '.join(names)} | {default} | {help_text.replace('|', '/')} |")
    return "\n".join(rows)
