"""Options declared once: every field of every option type is reachable from the campaign YAML
and from the `uq-bias` flags, with the default of its declaration.

The option types are found by scanning the package (any dataclass with an `option(...)` field),
so a field or a type added later is checked without editing this file.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import typing

import pytest
import yaml

import uq_bias
from uq_bias import options as opt
from uq_bias.campaign import config as cfg
from uq_bias.cli import build_parser
from uq_bias.flags import collect, flag_name

#: Types that only one side takes, and why.
CLI_ONLY = {"LabelKeys": "the campaign's labels come from its oracle"}
MINIMAL = {"data": {"structures": "x.xyz"}}


def _option_types() -> list[type]:
    found = []
    for info in pkgutil.walk_packages(uq_bias.__path__, "uq_bias."):
        try:
            module = importlib.import_module(info.name)
        except ImportError:  # an optional backend (nequip) not installed here
            continue
        found += opt.option_types(module)
    return found


OPTION_TYPES = _option_types()


def _sections(tp=cfg.CampaignConfig, prefix: str = ""):
    """(dotted prefix, type) of every section of the campaign YAML, the top level included;
    a list of sections is reached through its first item (``key[0].``)."""
    yield prefix, tp
    for row in opt.walk(tp, prefix, deep=False):
        nested, item = opt.dataclass_in(row.type), opt.list_item_dataclass(row.type)
        if row.section:
            yield from _sections(nested, row.key + ".")
        elif item is not None:
            yield from _sections(item, row.key + "[0].")


def _yaml_paths(cls) -> list[str]:
    """Dotted paths of the campaign sections that are ``cls`` (or a subclass of it)."""
    return [path for path, tp in _sections() if issubclass(tp, cls)]


def _parts(key: str):
    for part in key.split("."):
        name, _, index = part.partition("[")
        yield name, int(index[:-1]) if index else None


def _set(data: dict, key: str, value) -> dict:
    """``data`` with ``value`` at the dotted ``key`` (``a.b[0].c``), creating what is missing."""
    *parents, (last, last_index) = list(_parts(key))
    node = data
    for name, index in parents:
        node = node.setdefault(name, [] if index is not None else {})
        if index is not None:
            while len(node) <= index:
                node.append({})
            node = node[index]
    node[last] = value
    return data


def _minimal(path: str) -> dict:
    """MINIMAL, with one (default) item in each list of sections on ``path``."""
    data = yaml.safe_load(yaml.safe_dump(MINIMAL))
    if "[" in path:
        head = path[: path.rindex("]") + 1]
        _set(data, head.rsplit("[", 1)[0], [{}])
    return data


def _cli_places(cls) -> list[tuple[str, type, str, str, str]]:
    """(subcommand, declared type, dest, prefix, path of ``cls`` in it) where ``cls``'s flags
    are: a type added to a subcommand, or a section nested in one."""
    parser = build_parser()
    places = []
    for name, sub in parser._subparsers._group_actions[0].choices.items():
        for declared, dest, prefix in getattr(sub, "option_types", []):
            if declared is cls:
                places.append((name, declared, dest, prefix, ""))
            for row in opt.walk(declared):
                if row.section and opt.dataclass_in(row.type) is cls:
                    places.append((name, declared, dest, prefix, row.key + "."))
    return places


def _leaves(cls):
    return [r for r in opt.walk(cls) if not r.section and "[]" not in r.key]


def _get(obj, dotted: str):
    for name, index in _parts(dotted):
        obj = getattr(obj, name)
        if index is not None:
            obj = obj[index]
    return obj


def _other(tp, default):
    """A valid value of ``tp`` that differs from ``default`` (None if there is no easy one)."""
    origin = typing.get_origin(tp)
    if tp is bool:
        return not default
    if origin is typing.Literal:
        return next((a for a in typing.get_args(tp) if a != default), None)
    if tp is int:
        return default + 1
    if tp is float:
        return default * 2 + 1
    if tp is str:
        return default + "x"
    if origin is dict:
        return {"H": 0.5} if typing.get_args(tp)[1] is float else {"a": 1}
    if origin is list and typing.get_args(tp) == (float,):
        return [0.25, 0.75] if default != [0.25, 0.75] else [0.5, 1.0]
    if origin in (typing.Union, __import__("types").UnionType):
        for arg in typing.get_args(tp):
            if arg is type(None):
                continue
            kind = typing.get_origin(arg) or arg
            value = _other(arg, default if isinstance(default, kind) else _zero(arg))
            if value is not None and value != default:
                return value
    return None


def _zero(tp):
    return {int: 0, float: 0.0, str: "", bool: False}.get(tp)


def test_option_types_are_found():
    names = {cls.__name__ for cls in OPTION_TYPES}
    expected = {"ExploreConfig", "WatchdogConfig", "BiasConfig", "FitOptions", "LossWeights"}
    expected |= {"TrainerOptions", "UncertaintyOptions", "CalibrationOptions", "SelectionOptions"}
    expected |= {"OracleSpec", "ModelOptions", "CampaignConfig", "StopConfig", "DataConfig"}
    assert expected <= names


@pytest.mark.parametrize("cls", OPTION_TYPES, ids=lambda c: c.__name__)
def test_every_field_reachable_from_yaml_with_its_default(cls):
    paths = _yaml_paths(cls)
    if cls.__name__ in CLI_ONLY:
        assert not paths
        return
    items = {opt.list_item_dataclass(row.type) for row in opt.walk(cfg.CampaignConfig)}
    if cls in items:  # the items of a YAML list (report.cvs): no default; read in test_cvs.py
        return
    assert paths, f"{cls.__name__} is not a section of the campaign YAML"
    for path in paths:
        config = cfg.from_dict(_minimal(path))
        for row in _leaves(cls):
            key = f"{path}{row.key}"
            if key in cfg.SET_BY_CAMPAIGN or key == "data.structures":  # set in MINIMAL
                continue
            assert _get(config, key) == row.default, key
            value = _other(row.type, row.default)
            if value is None:
                continue
            try:
                got = cfg.from_dict(_set(_minimal(path), key, value))
            except opt.ConfigError as err:  # a value the type's own checks refuse
                assert key in str(err), err
                continue
            assert _get(got, key) == value, key


@pytest.mark.parametrize("cls", OPTION_TYPES, ids=lambda c: c.__name__)
def test_every_field_reachable_from_the_cli_with_its_default(cls):
    places = _cli_places(cls)
    if cls.__module__.startswith("uq_bias.campaign"):
        assert not places  # campaign-only sections: `uq-bias run` reads them from YAML
        return
    assert places, f"{cls.__name__} has no flags in any `uq-bias` subcommand"
    parser = build_parser()
    for command, declared, dest, prefix, path in places:
        required = _required(parser, command)
        args = parser.parse_args([command, *required])
        assert collect(args, declared, dest=dest, prefix=prefix) == declared()
        for row in _leaves(cls):
            flag = flag_name(path + row.key, prefix)
            value = _other(row.type, row.default)
            if value is None:
                continue
            if row.type is bool:
                argv = [flag if value else "--no-" + flag[2:]]
            else:
                argv = [flag, value if isinstance(value, str) else yaml.safe_dump(value).strip()]
                argv[1] = argv[1].removesuffix("\n...")
            args = parser.parse_args([command, *required, *argv])
            try:
                got = collect(args, declared, dest=dest, prefix=prefix)
            except opt.ConfigError as err:
                assert flag in str(err), err
                continue
            assert _get(got, path + row.key) == value, flag


def _required(parser, command: str) -> list[str]:
    sub = parser._subparsers._group_actions[0].choices[command]
    argv = []
    for action in sub._actions:
        if action.required and action.option_strings:
            argv += [action.option_strings[0], "1" if action.type is int else "x"]
        elif not action.option_strings and action.dest != "help":
            argv.append("x")
    for group in sub._mutually_exclusive_groups:
        if group.required:
            argv += [group._group_actions[0].option_strings[0], "x"]
    return argv


def test_library_checks_name_the_dotted_key_and_the_flag():
    with pytest.raises(opt.ConfigError, match=r"'exploration\.watchdog\.max_force'.*>= 0"):
        cfg.from_dict({**MINIMAL, "exploration": {"watchdog": {"max_force": -1.0}}})
    parser = build_parser()
    argv = ["md", "--unc", "u", "--start", "s", "--out", "o", "--watchdog-max-force", "-1"]
    args = parser.parse_args(argv)
    from uq_bias.dynamics import ExploreConfig

    with pytest.raises(opt.ConfigError, match="--watchdog-max-force"):
        collect(args, ExploreConfig, dest="explore")
    args = parser.parse_args([*argv[:7], "--steps", "2.5"])
    with pytest.raises(opt.ConfigError, match="--steps: expected int, got float 2.5"):
        collect(args, ExploreConfig, dest="explore")


@dataclasses.dataclass(frozen=True)
class Variable:
    name: str = opt.option("phi", "name")
    kind: typing.Literal["dihedral", "distance"] = opt.option("dihedral", "kind")
    atoms: list[int] = opt.option([], "atoms")
    period: float | None = opt.option(None, "period")


@dataclasses.dataclass(frozen=True)
class Report:
    cvs: list[Variable] = opt.option([], "cvs")
    extra: dict[str, float] = opt.option({}, "extra")


def test_new_fields_of_any_shape_are_read_without_new_code():
    """Nested dataclasses, Literal, Optional, dict and list-of-dataclass fields."""

    got = opt.build(Report, {"cvs": [{"name": "psi", "atoms": [1, 2, 3, 4], "period": 360}]})
    assert got.cvs == [Variable("psi", "dihedral", [1, 2, 3, 4], 360.0)]
    with pytest.raises(opt.ConfigError, match=r"'cvs\[0\]\.kind': expected 'dihedral'"):
        opt.build(Report, {"cvs": [{"kind": "angle"}]})
    with pytest.raises(opt.ConfigError, match=r"'cvs\[1\]\.atom' \(did you mean 'atoms'\?\)"):
        opt.build(Report, {"cvs": [{}, {"atom": [1]}]})
    assert [r.key for r in opt.walk(Report)][:3] == ["cvs", "cvs[].name", "cvs[].kind"]
    assert opt.to_dict(got)["cvs"][0]["atoms"] == [1, 2, 3, 4]


@pytest.mark.parametrize("text", ["1e-3", "1E-3", "+1e-3", "0.1e-1"])
def test_exponent_floats_that_yaml_1_1_reads_as_strings_are_floats(tmp_path, text):
    """PyYAML (YAML 1.1) reads 1e-3 as the string '1e-3': `--lr 1e-3` and `lr: 1e-3` were
    refused with "expected float, got str"."""
    assert isinstance(yaml.safe_load(f"lr: {text}")["lr"], str) or text == "0.1e-1"
    path = tmp_path / "c.yaml"
    path.write_text(f"data: {{structures: a.xyz}}\ntraining: {{lr: {text}}}\n")
    assert cfg.load(path).training.lr == pytest.approx(float(text))
    from uq_bias.flags import parse_text

    assert parse_text(text, float, "lr") == pytest.approx(float(text))  # the CLI's --lr 1e-3


def test_text_that_is_no_number_is_still_refused_for_a_float():
    with pytest.raises(opt.ConfigError, match="expected float, got str 'abc'"):
        opt.convert("abc", float, "lr")


def test_oracle_keywords_written_with_an_exponent_reach_the_calculator_as_floats(tmp_path):
    """Any-typed values (oracle.kwargs) are not converted by the option types: before, tblite got
    the text '1e-3' as its accuracy."""
    path = tmp_path / "c.yaml"
    oracle = "oracle: {kind: gfn2-xtb, kwargs: {accuracy: 1e-3}}"
    path.write_text(f"data: {{structures: a.xyz}}\n{oracle}\n")
    assert cfg.load(path).oracle.kwargs == {"accuracy": 0.001}


def test_the_yaml_reader_builds_no_python_objects():
    from uq_bias import yaml_text

    with pytest.raises(yaml.YAMLError, match="could not determine a constructor"):
        yaml_text.load("!!python/object/apply:os.system ['true']")
