"""Config dataclasses: the single definition of every option.

Each stage describes its options as a dataclass (validated in
``__post_init__`` like megatron-core's ``TransformerConfig``).  Command-line
flags and YAML files are derived from the dataclass, so an option is written
once: ``add_arguments`` turns fields into argparse flags (``--micro-batch-size``
for ``micro_batch_size``, or ``metadata={"flag": ...}``), ``from_namespace``
builds the dataclass back, and ``load_yaml`` / ``merge`` layer a YAML file
under the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Type, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value is invalid; the message says which and why."""


def field(default: Any = dataclasses.MISSING, *, help: str = "", flag: str | None = None,
          choices: Iterable[Any] | None = None, default_factory: Any = dataclasses.MISSING):
    """A dataclass field carrying its CLI help text (and optional flag name)."""
    meta = {"help": help}
    if flag is not None:
        meta["flag"] = flag
    if choices is not None:
        meta["choices"] = tuple(choices)
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def flag_name(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _resolve_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _base_type(tp):
    """Unwrap Optional[X] -> (X, optional)."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _str2bool(v: str) -> bool:
    if v.lower() in ("1", "true", "yes", "y", "on"):
        return True
    if v.lower() in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {v!r}")


def add_arguments(parser: argparse.ArgumentParser, cls: Type, group: str | None = None,
                  defaults_none: bool = True) -> None:
    """Add one flag per dataclass field.

    With ``defaults_none`` the argparse default is ``None`` so that the caller
    can tell "given on the command line" from "left at the dataclass default"
    (needed to layer CLI over YAML).
    """
    g = parser.add_argument_group(group or cls.__name__)
    hints = _resolve_types(cls)
    for f in dataclasses.fields(cls):
        if not f.init or f.metadata.get("cli") is False:
            continue
        tp, _ = _base_type(hints[f.name])
        kw: dict[str, Any] = {"help": f.metadata.get("help", ""), "dest": f.name}
        if f.default is not dataclasses.MISSING:
            kw["help"] += f" (default: {f.default!r})"
        if "choices" in f.metadata:
            kw["choices"] = f.metadata["choices"]
        if tp is bool:
            name = flag_name(f)
            g.add_argument(name, nargs="?", const=True, type=_str2bool,
                           default=None if defaults_none else f.default, **kw)
            if not name.startswith("--no-"):
                g.add_argument("--no-" + name[2:], dest=f.name, action="store_false",
                               help=argparse.SUPPRESS)
            continue
        origin = typing.get_origin(tp)
        if origin in (list, tuple):
            inner = typing.get_args(tp)[0] if typing.get_args(tp) else str
            kw["nargs"] = "+"
            kw["type"] = inner if inner in (int, float, str) else str
        elif tp in (int, float, str):
            kw["type"] = tp
        else:
            kw["type"] = str
        if not defaults_none:
            if f.default is not dataclasses.MISSING:
                kw["default"] = f.default
            elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                kw["default"] = f.default_factory()  # type: ignore[misc]
        else:
            kw["default"] = None
        g.add_argument(flag_name(f), **kw)


def from_namespace(cls: Type[T], ns: argparse.Namespace | dict, base: dict | None = None) -> T:
    """Build ``cls`` from parsed args layered over ``base`` (e.g. from YAML)."""
    values = dict(base or {})
    src = vars(ns) if isinstance(ns, argparse.Namespace) else ns
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    for k, v in src.items():
        if k in names and v is not None:
            values[k] = v
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown option(s) {sorted(unknown)}")
    hints = _resolve_types(cls)
    for k, v in list(values.items()):
        tp, _ = _base_type(hints[k])
        if typing.get_origin(tp) is tuple and isinstance(v, list):
            values[k] = tuple(v)
    return cls(**values)


def load_yaml(path: str | Path, section: str | None = None) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:  # one line: where and what
        raise ConfigError(f"{p}: invalid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    if section is not None:
        data = data.get(section, {}) or {}
    # YAML keys may use flag spelling (micro-batch-size) or field spelling.
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)
