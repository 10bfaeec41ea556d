"""Command-line flags generated from option dataclasses (see :mod:`uq_bias.options`).

Every option of a dataclass becomes one flag: the dotted key below the dataclass, with ``-`` for
``_`` and ``.`` (``watchdog.max_force`` -> ``--watchdog-max-force``), after an optional prefix.
A ``bool`` option is a ``--name`` / ``--no-name`` pair; any other value is read as YAML
(``--devices '[0, 1]'``, ``--weights '{H: 0.5}'``, ``--ema-decay null``) and checked against the
type exactly like the campaign YAML. Flags not given keep the dataclass default, so defaults live
in one place: the declaration.
"""

from __future__ import annotations

import argparse
import typing

from uq_bias import options as opt

_SEP = ":"


def flag_name(key: str, prefix: str = "") -> str:
    """``watchdog.max_force`` -> ``--watchdog-max-force`` (after ``prefix``)."""
    return "--" + prefix + key.replace(".", "-").replace("_", "-")


def _leaves(cls) -> list[opt.Row]:
    """The rows that get a flag: every key that is not a section or inside a list of sections."""
    return [row for row in opt.walk(cls) if not row.section and "[]" not in row.key]


def _help(row: opt.Row) -> str:
    unit = f" [{row.unit}]" if row.unit else ""
    return f"{row.doc}{unit} (default: {row.default_text})".replace("%", "%%")


def add_options(parser: argparse.ArgumentParser, cls, *, dest: str, prefix: str = "") -> None:
    """Add one flag per option of the dataclass ``cls``; read them back with :func:`collect`.
    The parser remembers ``(cls, dest, prefix)`` in its ``option_types`` list."""
    parser.__dict__.setdefault("option_types", []).append((cls, dest, prefix))
    title = (cls.__doc__ or cls.__name__).strip().splitlines()[0]
    group = parser.add_argument_group(f"{cls.__name__}: {title}")
    for row in _leaves(cls):
        name = flag_name(row.key, prefix)
        common = {"dest": f"{dest}{_SEP}{row.key}", "default": argparse.SUPPRESS}
        if row.type is bool:
            group.add_argument(
                name, action=argparse.BooleanOptionalAction, help=_help(row), **common
            )
        else:
            group.add_argument(name, help=_help(row), metavar=_metavar(row.type), **common)


def _metavar(tp) -> str:
    if typing.get_origin(tp) is typing.Literal:
        return "{" + ",".join(str(a) for a in typing.get_args(tp)) + "}"
    return opt.type_name(tp).upper().replace(" ", "")


def given(args: argparse.Namespace, dest: str) -> dict[str, object]:
    """{dotted key: raw value} of the flags of ``dest`` that were given."""
    head = dest + _SEP
    return {k[len(head) :]: v for k, v in vars(args).items() if k.startswith(head)}


def collect(args: argparse.Namespace, cls, *, dest: str, prefix: str = "", **fixed):
    """The ``cls`` instance of the flags given (others keep their defaults); ``fixed`` values
    are set by the command itself. Raises :class:`~uq_bias.options.ConfigError` naming the flag."""
    types_ = {row.key: row.type for row in _leaves(cls)}
    data: dict = {}
    for key, raw in given(args, dest).items():
        value = raw if isinstance(raw, bool) else parse_text(raw, types_[key], key, prefix)
        node = data
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    data.update(fixed)

    def label(key: str) -> str:
        return flag_name(key, prefix) if key else cls.__name__

    return opt.build(cls, data, "", label)


def parse_text(text: str, tp, key: str, prefix: str = ""):
    """The value of a flag: YAML (numbers, null, lists, mappings), or the text itself where the
    type takes a string; checked against ``tp``."""
    import yaml

    from uq_bias import yaml_text

    def label(k: str) -> str:
        return flag_name(k, prefix)

    if text.strip().lower() in ("none", "null", "~"):
        value = None
    else:
        try:
            value = yaml_text.load(text)
        except yaml.YAMLError:
            value = text
    try:
        return opt.convert(value, tp, key, label)
    except opt.ConfigError:
        if value == text:
            raise
        try:
            return opt.convert(text, tp, key, label)
        except opt.ConfigError:
            pass
        raise


def reference(parser: argparse.ArgumentParser) -> list[tuple[str, str]]:
    """(flags, help) of every optional argument of a (sub)parser, in order, for the docs."""
    rows = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        names = " / ".join(f"`{s}`" for s in action.option_strings) or f"`{action.dest}`"
        text = (action.help or "").replace("%%", "%")
        if action.required and action.option_strings:
            text = f"required; {text}"
        rows.append((names, text))
    return rows
