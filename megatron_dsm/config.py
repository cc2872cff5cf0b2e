"""Config dataclasses: the single definition of every option.

Each stage describes its options as a dataclass (validated in
``__post_init__`` like megatron-core's ``TransformerConfig``).  Command-line
flags and YAML files are derived from the dataclass, so an option is written
once: ``add_arguments`` turns fields into argparse flags (``--micro-batch-size``
for ``micro_batch_size``, or ``metadata={"flag": ...}``), ``from_namespace``
builds the dataclass back, and ``load_yaml`` reads a YAML section to layer
under the command line.

Validation is one place for every source.  :func:`check_value` enforces a
field's type (from its annotation), its ``choices`` and its ``min``/``max``.
Values from YAML and the command line go through it in
:func:`from_namespace`, whose errors name the file and key or the flag;
values from Python go through it in classes decorated with :func:`options`,
before the class's own ``__post_init__`` checks.  Each problem is one
:class:`ConfigError` naming the key, where it came from and what is allowed.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Type, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value is invalid; the message says which and why."""


def field(default: Any = dataclasses.MISSING, *, help: str = "", flag: str | None = None,
          choices: Iterable[Any] | None = None, min: float | None = None,
          max: float | None = None, default_factory: Any = dataclasses.MISSING):
    """A dataclass field carrying its CLI help text (and optional flag name),
    its allowed values (``choices``: values, or a function returning them
    when the set grows at run time, as a registry does) and its inclusive
    range (``min``, ``max``)."""
    meta: dict[str, Any] = {"help": help}
    if flag is not None:
        meta["flag"] = flag
    if choices is not None:
        meta["choices"] = choices if callable(choices) else tuple(choices)
    if min is not None:
        meta["min"] = min
    if max is not None:
        meta["max"] = max
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def flag_name(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


@functools.lru_cache(maxsize=None)
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


_TRUE = ("1", "true", "yes", "y", "on")
_FALSE = ("0", "false", "no", "n", "off")


def _str2bool(v: str) -> bool:
    if v.lower() in _TRUE:
        return True
    if v.lower() in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {v!r}")


# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------


def _scalar(value: Any, tp: type, where: str) -> Any:
    """``value`` as ``tp`` (int, float, bool or str), or a ConfigError."""
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
            return value.lower() in _TRUE
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        num = value
        if isinstance(value, str):   # YAML reads 1e-6 (no dot) as a string
            try:
                num = float(value.strip())
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if not isinstance(num, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if tp is float:
            return float(num)
        if float(num) != int(num):
            raise ConfigError(f"{where}: expected a whole number, got {value!r}")
        return int(num)
    if tp is str:
        if isinstance(value, (str, Path)):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value   # other annotations (dicts, classes): the class checks them itself


def _typed(value: Any, tp: Any, where: str) -> Any:
    tp, optional = _base_type(tp)
    if value is None:
        if optional or tp is Any:
            return None
        raise ConfigError(f"{where}: a value is required, got null")
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        inner = args[0] if args else Any
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        out = [_typed(v, inner, f"{where}[{i}]") for i, v in enumerate(items)]
        return tuple(out) if origin is tuple else out
    if tp in (int, float, bool, str):
        return _scalar(value, tp, where)
    return value


def field_choices(f: dataclasses.Field) -> tuple | None:
    """The allowed values of a field (None: any)."""
    choices = f.metadata.get("choices")
    return tuple(choices()) if callable(choices) else choices


def _check_choices_and_range(f: dataclasses.Field, value: Any, where: str) -> None:
    choices = field_choices(f)
    if choices is not None and value is not None:
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if v not in choices:
                hint = difflib.get_close_matches(str(v).lower(), [str(c) for c in choices], n=1)
                near = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise ConfigError(f"{where}: {v!r} is not one of {', '.join(map(str, choices))}{near}")
    lo, hi = f.metadata.get("min"), f.metadata.get("max")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if lo is not None and value < lo:
            raise ConfigError(f"{where}: must be >= {lo}, got {value}")
        if hi is not None and value > hi:
            raise ConfigError(f"{where}: must be <= {hi}, got {value}")


def check_value(cls: Type, name: str, value: Any, where: str | None = None) -> Any:
    """``value`` for field ``name`` of ``cls``, converted to the field's type
    (numbers from strings, a scalar to a one-item list), or a ConfigError that
    names ``where`` (default ``Class.field``)."""
    where = where or f"{cls.__name__}.{name}"
    f = next(x for x in dataclasses.fields(cls) if x.name == name)
    out = _typed(value, _resolve_types(cls)[name], where)
    _check_choices_and_range(f, out, where)
    return out


def validate(obj) -> None:
    """Check (and convert in place) every init field of a config instance."""
    for f in dataclasses.fields(obj):
        if f.init:
            object.__setattr__(obj, f.name, check_value(type(obj), f.name, getattr(obj, f.name)))


def options(cls: Type[T]) -> Type[T]:
    """``@dataclasses.dataclass`` for option classes: every instance is
    validated by :func:`validate` before the class's own ``__post_init__``."""
    cls = dataclasses.dataclass(cls)
    own = cls.__dict__.get("__post_init__")

    def __post_init__(self):
        validate(self)
        if own is not None:
            own(self)

    cls.__post_init__ = __post_init__
    return cls


# ---------------------------------------------------------------------------
# command line and YAML
# ---------------------------------------------------------------------------


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
            kw["choices"] = field_choices(f)
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


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line, ``prog: error: ...`` (exit 2),
    instead of the whole usage text followed by the error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (--help lists the options)\n")


class YamlSection(dict):
    """A YAML section's values, remembering the file and section they came
    from so that errors can name them."""

    def __init__(self, values: dict, source: str, section: str | None):
        super().__init__(values)
        self.source, self.section = source, section

    def where(self, key: str) -> str:
        return f"{self.source}: {self.section + '.' if self.section else ''}{key}"


def _where(cls: Type, key: str, from_cli: bool, base: dict) -> str:
    if from_cli:
        f = next((x for x in dataclasses.fields(cls) if x.name == key), None)
        return flag_name(f) if f is not None else "--" + key.replace("_", "-")
    if isinstance(base, YamlSection):
        return base.where(key)
    return f"{cls.__name__}.{key}"


def checked_values(cls: Type, cli: dict | None = None, base: dict | None = None) -> dict:
    """``base`` (e.g. a YAML section) overlaid with the non-None ``cli``
    values, each checked against ``cls``'s fields; errors name the flag, or
    the file and key, a value came from.  Keys of ``cli`` that are not
    fields of ``cls`` are ignored (a parser holds several classes' flags)."""
    base = base if base is not None else {}
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(base) - names)
    if unknown:
        near = difflib.get_close_matches(unknown[0], sorted(names), n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ConfigError(f"{_where(cls, unknown[0], False, base)}: unknown option{hint}")
    given = {k: v for k, v in (cli or {}).items() if k in names and v is not None}
    values = {**base, **given}
    return {k: check_value(cls, k, v, _where(cls, k, k in given, base)) for k, v in values.items()}


def from_namespace(cls: Type[T], ns: argparse.Namespace | dict, base: dict | None = None) -> T:
    """Build ``cls`` from parsed args layered over ``base`` (e.g. a YAML
    section), every value checked first (:func:`checked_values`)."""
    return cls(**checked_values(cls, vars(ns) if isinstance(ns, argparse.Namespace) else ns, base))


def load_yaml(path: str | Path, section: str | None = None) -> YamlSection:
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
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: section {section!r} must be a mapping")
    # YAML keys may use flag spelling (micro-batch-size) or field spelling.
    return YamlSection({str(k).replace("-", "_"): v for k, v in data.items()}, str(p), section)


def check_sections(path: str | Path, allowed: Iterable[str]) -> None:
    """A YAML file's top-level keys must be known sections."""
    p = Path(path)
    data = yaml.safe_load(p.read_text()) or {}
    allowed = list(allowed)
    for k in data if isinstance(data, dict) else ():
        if k not in allowed:
            raise ConfigError(f"{p}: unknown section {k!r}; sections here: {', '.join(allowed)}")


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)
