"""Options declared once: a dataclass field that carries its own documentation and unit.

Every user-facing option of the library lives on the dataclass that uses it (``ExploreConfig``,
``WatchdogConfig``, ``BiasConfig``, ``FitOptions``, ...) and is declared with :func:`option`.
The campaign YAML (:mod:`uq_bias.campaign.config`), the ``uq-bias`` flags (:mod:`uq_bias.flags`)
and the reference pages in ``docs/`` are generated from these declarations, so a new field is
reachable everywhere at once::

    @dataclass(frozen=True)
    class WatchdogConfig:
        max_force: float | None = option(50.0, "Stop when a force exceeds this.", unit="eV/A")

This module also reads such a dataclass from plain data (:func:`build`): every key is checked
against the type hints (bool, int, float, str, None, Literal, unions, ``list[...]``,
``dict[...]``, nested dataclasses and lists of them), and an error names the dotted key, the
expected type and what came, or the closest valid key. A ``ValueError`` raised by the class's own
``__post_init__`` checks comes out as a :class:`ConfigError` naming the key it blames.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import re
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal

#: Keys of ``Field.metadata`` written by :func:`option`.
DOC = "doc"
UNIT = "unit"
#: ``Field.metadata`` key of fields that are not options (set by code, never by a user).
INTERNAL = "internal"


def option(default: Any, doc: str, *, unit: str | None = None) -> Any:
    """A dataclass field with a default, a one-line ``doc`` and an optional ``unit`` (e.g.
    "eV/A", "fs", "K"). Mutable defaults (dicts, lists, dataclass instances) are deep-copied for
    every instance."""
    metadata = {DOC: doc, UNIT: unit}
    if isinstance(default, (dict, list, set)) or dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def did_you_mean(key, valid) -> str:
    """`` (did you mean 'x'?)`` for the entry of ``valid`` closest to ``key``, or ''."""
    close = difflib.get_close_matches(str(key), list(valid), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class ConfigError(ValueError):
    """Options that are not valid; the message names the key (or flag), what was expected and
    what came."""


def public_fields(cls) -> list[dataclasses.Field]:
    """The user-facing fields of a dataclass (``init`` fields not marked internal)."""
    return [f for f in dataclasses.fields(cls) if f.init and not f.metadata.get(INTERNAL)]


def default_of(f: dataclasses.Field) -> Any:
    """The default value of a field (a fresh copy for factories); MISSING if it has none."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def hints(cls) -> dict[str, Any]:
    """Resolved type hints of a dataclass (``from __future__ import annotations`` safe)."""
    return typing.get_type_hints(cls)


def dataclass_in(tp) -> type | None:
    """The dataclass ``tp`` is, or that ``tp | None`` holds; else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        found = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
        if len(found) == 1:
            return found[0]
    return None


def list_item_dataclass(tp) -> type | None:
    """The dataclass of a ``list[SomeDataclass]`` type (or its Optional); else None."""
    for candidate in (tp, *typing.get_args(tp)):
        if typing.get_origin(candidate) is list:
            (item,) = typing.get_args(candidate) or (None,)
            if dataclasses.is_dataclass(item):
                return item
    return None


def type_name(tp) -> str:
    """A short human name of a type hint, as YAML users read it (null, mapping, list[...])."""
    origin = typing.get_origin(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(tp))
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(type_name(a) for a in typing.get_args(tp))}]"
    if tp is Any:
        return "any"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def config_key(key: str) -> str:
    """How an error names a key of a YAML file."""
    return f"config key {key!r}"


Label = Callable[[str], str]
Hidden = Mapping[str, str]
_NONE: Hidden = types.MappingProxyType({})


def convert(value, tp, where: str, label: Label = config_key, hidden: Hidden = _NONE):
    """``value`` checked against the type hint ``tp`` (ints become floats where a float is
    expected); raises :class:`ConfigError` naming ``where`` with ``label``. ``hidden``: see
    :func:`build`."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where, label, hidden)
    if origin in (typing.Union, types.UnionType):
        return _convert_union(value, tp, where, label, hidden)
    if origin is Literal:
        if value in typing.get_args(tp) and not isinstance(value, bool):
            return value
        raise _wrong(where, tp, value, label)
    if origin is list:
        if not isinstance(value, list):
            raise _wrong(where, tp, value, label)
        (item,) = typing.get_args(tp)
        return [convert(v, item, f"{where}[{k}]", label, hidden) for k, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _wrong(where, tp, value, label)
        key_tp, value_tp = typing.get_args(tp)
        return {
            convert(k, key_tp, f"{where}.{k}", label): convert(v, value_tp, f"{where}.{k}", label)
            for k, v in value.items()
        }
    return _convert_scalar(value, tp, where, label)


def _convert_union(value, tp, where: str, label: Label, hidden: Hidden):
    options = typing.get_args(tp)
    for candidate in options:
        if dataclasses.is_dataclass(candidate) and isinstance(value, dict):
            return build(candidate, value, where, label, hidden)  # its own, precise error
    for candidate in options:
        try:
            return convert(value, candidate, where, label)
        except ConfigError:
            continue
    raise _wrong(where, tp, value, label)


_SCALARS = {
    bool: lambda v: isinstance(v, bool),
    int: lambda v: isinstance(v, int) and not isinstance(v, bool),
    float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    str: lambda v: isinstance(v, str),
    type(None): lambda v: v is None,
}


def _convert_scalar(value, tp, where: str, label: Label):
    if tp not in _SCALARS:
        raise TypeError(f"option type {tp} of {where} is not supported")  # a bug, not user input
    if not _SCALARS[tp](value):
        raise _wrong(where, tp, value, label)
    return float(value) if tp is float else value


def _wrong(where: str, tp, value, label: Label) -> ConfigError:
    return ConfigError(
        f"{label(where)}: expected {type_name(tp)}, got {type(value).__name__} {value!r}"
    )


def _dotted(where: str, key: str) -> str:
    return f"{where}.{key}" if where else str(key)


def build(cls, data, where: str = "", label: Label = config_key, hidden: Hidden = _NONE):
    """An instance of the dataclass ``cls`` from a mapping, every key checked; missing keys take
    the class's defaults. Raises :class:`ConfigError` naming the dotted key.

    ``hidden`` maps dotted keys that the caller sets itself (not the user) to the reason: they
    are left out of the valid keys, and giving one is an error with that reason."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        section = label(where) if where else "the top level"
        raise ConfigError(
            f"{section}: expected a mapping of keys, got {type(data).__name__} {data!r}"
        )
    types_ = hints(cls)
    valid = [f.name for f in public_fields(cls) if _dotted(where, f.name) not in hidden]
    values = {}
    for key, value in data.items():
        if _dotted(where, key) in hidden:
            raise ConfigError(f"{label(_dotted(where, key))} {hidden[_dotted(where, key)]}")
        if key not in valid:
            raise ConfigError(
                f"unknown {label(_dotted(where, key))}{did_you_mean(key, valid)}; valid keys"
                f"{' of ' + repr(where) if where else ''}: {', '.join(valid)}"
            )
        values[key] = convert(value, types_[key], _dotted(where, key), label, hidden)
    try:
        return cls(**values)
    except (ValueError, TypeError) as err:  # the class's own checks (__post_init__)
        blamed = _blamed_field(str(err), valid)
        key = _dotted(where, blamed) if blamed else where
        raise ConfigError(f"{label(key) if key else 'config'}: {err}") from err


def _blamed_field(message: str, names: list[str]) -> str | None:
    """The field a check's message names first (whole words), or None."""
    found = []
    for name in names:
        match = re.search(rf"(?<![\w.]){re.escape(name)}(?![\w])", message)
        if match:
            found.append((match.start(), -len(name), name))
    return min(found)[2] if found else None


def narrow(value, cls):
    """An instance of the base dataclass ``cls`` with the fields ``value`` (an instance of a
    subclass that adds fields) shares with it."""
    return cls(**{f.name: getattr(value, f.name) for f in dataclasses.fields(cls) if f.init})


def to_dict(value) -> Any:
    """Plain data (for YAML/JSON) of a dataclass's public fields, recursively."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_dict(getattr(value, f.name)) for f in public_fields(type(value))}
    if isinstance(value, (list, tuple)):
        return [to_dict(v) for v in value]
    if isinstance(value, dict):
        return {k: to_dict(v) for k, v in value.items()}
    return value


@dataclasses.dataclass(frozen=True)
class Row:
    """One documented option: dotted key, type hint, default, doc, unit; ``section`` when the
    key holds a nested dataclass (its keys follow)."""

    key: str
    type: Any
    default: Any
    doc: str
    unit: str | None
    section: bool = False

    @property
    def default_text(self) -> str:
        return json.dumps(to_dict(self.default))


def walk(cls, prefix: str = "", *, deep: bool = True) -> Iterator[Row]:
    """Every option of the dataclass ``cls``, depth first: nested dataclasses (also optional
    ones) give a section row then their keys; ``list[Dataclass]`` fields give their item keys
    under ``key[]``. ``deep=False``: this level only. Defaults are those of ``cls()`` (where its
    ``__post_init__`` fills one in, the filled-in value)."""
    types_ = hints(cls)
    try:
        instance = cls()
    except (TypeError, ValueError):  # a type with required fields
        instance = None
    for f in public_fields(cls):
        key, tp = f"{prefix}{f.name}", types_[f.name]
        doc, unit = f.metadata.get(DOC, ""), f.metadata.get(UNIT)
        nested, items = dataclass_in(tp), list_item_dataclass(tp)
        default = default_of(f) if instance is None else getattr(instance, f.name)
        yield Row(key, tp, default, doc, unit, section=nested is not None)
        if not deep:
            continue
        if nested is not None:
            yield from walk(nested, key + ".")
        elif items is not None:
            yield from walk(items, key + "[].")


def option_types(module) -> list[type]:
    """The dataclasses defined in ``module`` that declare at least one :func:`option`."""
    found = []
    for obj in vars(module).values():
        if (
            isinstance(obj, type)
            and dataclasses.is_dataclass(obj)
            and obj.__module__ == module.__name__
            and any(DOC in f.metadata for f in dataclasses.fields(obj))
        ):
            found.append(obj)
    return found
