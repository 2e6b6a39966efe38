"""One definition per command: a config dataclass drives the CLI, YAML and Python API.

Each field of a config dataclass is declared with :func:`option`, which records
its help text (and optional CLI aliases / choices). From that single definition

* :func:`add_options` builds the ``argparse`` flags of a subcommand,
* :func:`load_yaml` reads a YAML file of the same keys (unknown keys are an error
  that names the file and the key),
* :func:`resolve` merges defaults < YAML < explicit CLI flags into an instance.

The Python API takes the dataclass itself (or keyword arguments of the same
names), so the three ways of configuring a run cannot drift apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong type."""


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    choices: typing.Sequence[Any] | None = None,
    aliases: typing.Sequence[str] = (),
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field with CLI metadata (``help``, ``choices``, ``aliases``)."""
    metadata = {"help": help, "choices": choices, "aliases": tuple(aliases)}
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


def add_options(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one flag per field of ``cls``; unset flags stay ``None`` so YAML can fill them."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp, _ = _base_type(hints[f.name])
        meta = f.metadata
        default = f.default if f.default is not dataclasses.MISSING else None
        help_text = meta.get("help", "")
        if f.default is not dataclasses.MISSING and f.default is not None:
            help_text += f" (default: {f.default})"
        flags = [_flag(f.name), *meta.get("aliases", ())]
        kwargs: dict[str, Any] = {"dest": f.name, "default": None, "help": help_text}
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
        del default
        parser.add_argument(*flags, **kwargs)


def load_yaml(path: str | Path, cls: type) -> dict[str, Any]:
    """Read a YAML mapping whose keys are field names of ``cls`` (dashes allowed)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to values")
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in names:
            raise ConfigError(
                f"{path}: unknown option {key!r} for {cls.__name__}; known: {', '.join(sorted(names))}"
            )
        out[name] = value
    return out


def build(cls: type[T], values: dict[str, Any], source: str = "arguments") -> T:
    """Instantiate ``cls`` from ``values``, checking required fields and simple types."""
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init or f.name not in values:
            continue
        value = values[f.name]
        tp, optional = _base_type(hints[f.name])
        kwargs[f.name] = _coerce(value, tp, optional, f.name, source)
    missing = [
        _flag(f.name)
        for f in dataclasses.fields(cls)
        if f.init
        and f.name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{source}: missing required option(s): {', '.join(missing)}")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    return obj


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
        out[f.name] = str(value) if isinstance(value, Path) else value
    return out


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """``--config FILE.yaml`` plus one flag per field of ``cls`` (flags override the file)."""
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help=f"YAML file of {cls.__name__} options (keys as the flags, - or _); flags given here override it",
    )
    add_options(parser, cls)
