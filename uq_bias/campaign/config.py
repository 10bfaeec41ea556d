"""The campaign configuration: typed sections with defaults, read from YAML and validated up front.

Every key is a dataclass field whose ``metadata["doc"]`` says what it means and its unit; the
reference in ``docs/config.md`` is generated from them (``python -m uq_bias.campaign.config``).
Validation is strict and happens before any work: an unknown key is an error naming its dotted
path and the valid keys; a wrong type names the key, the expected type and what came.
Paths in the file are relative to the YAML file's folder.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from uq_bias.campaign.cvs import CollectiveVariable


def _f(default, doc: str):
    """A dataclass field with a default and a one-line documentation string."""
    if isinstance(default, (dict, list)) or dataclasses.is_dataclass(default):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"doc": doc})
    return field(default=default, metadata={"doc": doc})


@dataclass
class DataConfig:
    """Where the campaign starts: structures for the walkers and the first labelled frames."""

    structures: str = _f(
        "",
        "Start structures: a file ASE can read (relative to the YAML file) or `builtin:NAME` "
        "with NAME one of alanine_dipeptide, cu_fcc, cual_fcc.",
    )
    initial_frames: int = _f(
        8, "Rattled copies of the start structures labelled before the first iteration."
    )
    rattle: float = _f(0.05, "Standard deviation of the rattle of the initial frames, A.")
    initial_data: str | None = _f(
        None, "Optional extended XYZ of frames already labelled (energy, forces) to start from."
    )
    valid_fraction: float = _f(
        0.25,
        "Share of labelled frames held out for validation and calibration (chosen by frame id, "
        "so a frame never changes side as the data grow).",
    )


@dataclass
class OracleConfig:
    """The reference method that labels frames."""

    kind: Literal["gfn2-xtb", "gfn1-xtb", "emt", "import"] = _f(
        "emt",
        "gfn2-xtb / gfn1-xtb (tblite), emt (ASE), or import (any ASE calculator by import path).",
    )
    calculator: str | None = _f(
        None,
        "For kind=import: `package.module:Class`, `package.module.Class` or `/path/file.py:Class`.",
    )
    kwargs: dict[str, Any] = _f({}, "Keyword arguments for the calculator's constructor.")


@dataclass
class ModelConfig:
    """The MACE model (or ensemble) that is trained."""

    file: str | None = _f(
        None,
        "Existing MACE model file to start from (a pickle: trusted files only); null builds a "
        "fresh model from `preset`.",
    )
    preset: Literal["tiny", "small", "medium"] = _f("small", "Size of a fresh MACE model.")
    cutoff: float = _f(5.0, "Cutoff radius of a fresh model, A.")
    dtype: Literal["float64", "float32"] = _f("float64", "Floating-point type of the model.")
    ensemble: int = _f(1, "Members of a deep ensemble; 1 trains a single model.")
    fine_tune: bool = _f(
        True, "Start each iteration's training from the previous iteration's model."
    )


@dataclass
class TrainingConfig:
    """Training with Lightning; devices, num_nodes and strategy go to the Trainer as they are."""

    max_epochs: int = _f(100, "Epochs per iteration.")
    batch_size: int = _f(4, "Structures per batch.")
    lr: float = _f(1e-2, "Learning rate of the optimiser.")
    energy_weight: float = _f(1.0, "Weight of the per-atom energy error in the loss.")
    forces_weight: float = _f(10.0, "Weight of the force error in the loss.")
    stress_weight: float = _f(
        100.0, "Weight of the stress error in the loss (periodic cells; stress is in eV/A^3)."
    )
    accelerator: str = _f("auto", "Lightning accelerator: auto, cpu, gpu, ...")
    devices: int | str | list[int] = _f("auto", "Lightning devices: a count, a list or auto.")
    num_nodes: int = _f(1, "Lightning nodes for multi-node training.")
    strategy: str = _f("auto", "Lightning strategy, for example ddp.")


@dataclass
class UncertaintyConfig:
    """How the model's uncertainty is computed and calibrated."""

    method: Literal["posterior", "distance", "ensemble"] = _f(
        "posterior",
        "posterior (last-layer gradient features), distance (feature-space distance), or "
        "ensemble (needs model.ensemble > 1).",
    )
    sigma: float = _f(1e-2, "Noise parameter sigma of the posterior (dimensionless).")
    sketch: int | None = _f(
        None, "Random-projection size for the gradient features; null uses them as they are."
    )
    calibration: Literal["conformal", "likelihood"] = _f(
        "conformal", "How the calibration factor is fitted on the validation frames."
    )
    alpha: float = _f(0.1, "Miscoverage level of conformal calibration (coverage 1 - alpha).")


@dataclass
class BiasConfig:
    """The uncertainty bias E_b = E - tau U of the exploration."""

    mode: Literal["relative", "absolute", "none"] = _f(
        "relative",
        "relative: tau = strength * <|F|>/<|F_bias|> over a window; absolute: tau = strength; "
        "none: unbiased MD.",
    )
    strength: float = _f(0.2, "tau_rel (relative, dimensionless) or tau (absolute, 1).")
    window: int = _f(100, "Steps of the sliding window of the relative strength.")
    species: dict[str, float] = _f({}, "Per-element weights of the bias force, e.g. {H: 0.5}.")


@dataclass
class ExplorationConfig:
    """Uncertainty-biased molecular dynamics from several walkers."""

    walkers: int = _f(2, "Independent MD runs per iteration.")
    steps: int = _f(200, "MD steps per walker.")
    timestep: float = _f(0.5, "MD time step, fs.")
    temperature: float = _f(300.0, "Thermostat temperature, K.")
    friction: float = _f(0.01, "Langevin friction, 1/fs.")
    ensemble: Literal["nvt", "npt"] = _f("nvt", "nvt (Langevin) or npt (periodic cells).")
    pressure: float = _f(0.0, "NPT pressure, GPa.")
    sample_every: int = _f(10, "Keep a candidate frame every this many steps.")
    max_uncertainty: float | None = _f(
        None, "Stop a walker when the largest atom uncertainty exceeds this, eV/A."
    )
    start: Literal["structures", "labelled"] = _f(
        "structures",
        "Walkers start from the start structures, or from the most recently labelled frames.",
    )
    bias: BiasConfig = _f(BiasConfig(), "The uncertainty bias.")


@dataclass
class SelectionConfig:
    """Which candidates are labelled."""

    method: Literal["maxdet", "maxdist", "lcmd", "random"] = _f("maxdet", "Batch selection method.")
    batch_size: int = _f(8, "Frames labelled per iteration.")


@dataclass
class StopConfig:
    """When the campaign ends (whichever comes first)."""

    iterations: int = _f(5, "Active-learning iterations.")
    label_budget: int | None = _f(None, "Largest number of labelled frames, initial ones included.")
    target_forces_rmse: float | None = _f(
        None, "Stop once the validation force RMSE is below this, eV/A."
    )
    target_energy_rmse: float | None = _f(
        None, "Stop once the validation energy RMSE is below this, eV/atom."
    )


@dataclass
class ExecutorConfig:
    """Where labelling and walkers run."""

    kind: Literal["inprocess", "process", "dask"] = _f(
        "inprocess",
        "inprocess, process (a local process pool), or dask (a Dask distributed cluster).",
    )
    workers: int = _f(2, "Processes of the local pool or of a local Dask cluster.")
    address: str | None = _f(
        None,
        "Dask scheduler address (tcp://host:8786); null starts a local Dask cluster.",
    )
    threads_per_worker: int = _f(1, "Torch threads in each worker.")


@dataclass
class ReportConfig:
    """The markdown report and its plots."""

    plots: bool = _f(True, "Write PNG plots beside the report.")
    ramachandran: bool | None = _f(
        None,
        "Without report.cvs, use a peptide backbone's phi and psi (if found) for the coverage "
        "and the CV map (Ramachandran plane); false: no automatic CVs.",
    )
    cvs: list[CollectiveVariable] = _f(
        [],
        "Collective variables for the coverage of CV space: a list of {name, kind: dihedral or "
        "distance, atoms, period, range}; empty: phi and psi of a peptide backbone, if any.",
    )


@dataclass
class CampaignConfig:
    """A whole active-learning campaign."""

    folder: str | None = _f(
        None,
        "Campaign folder (relative to the YAML file); null: a folder named like the YAML file "
        "beside it.",
    )
    seed: int = _f(0, "Seed of everything random (rattles, splits, models, MD).")
    data: DataConfig = _f(DataConfig(), "Start structures and first data.")
    oracle: OracleConfig = _f(OracleConfig(), "Reference calculator.")
    model: ModelConfig = _f(ModelConfig(), "Model to train.")
    training: TrainingConfig = _f(TrainingConfig(), "Lightning training.")
    uncertainty: UncertaintyConfig = _f(UncertaintyConfig(), "Uncertainty and calibration.")
    exploration: ExplorationConfig = _f(ExplorationConfig(), "Biased MD.")
    selection: SelectionConfig = _f(SelectionConfig(), "Batch selection.")
    stop: StopConfig = _f(StopConfig(), "Stopping rules.")
    executor: ExecutorConfig = _f(ExecutorConfig(), "Labelling and walker execution.")
    report: ReportConfig = _f(ReportConfig(), "Report.")
    base_dir: str = field(default=".", metadata={"doc": "", "internal": True})

    def path(self, value: str) -> Path:
        """``value`` resolved against the YAML file's folder."""
        path = Path(value).expanduser()
        return path if path.is_absolute() else Path(self.base_dir) / path


class ConfigError(ValueError):
    """A campaign configuration that is not valid; the message names the key."""


# ---------------------------------------------------------------------------------------------
# Validation


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in typing.get_args(tp))}]"
    if tp is Any:
        return "any"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _convert(value, tp, where: str):
    """``value`` checked against the type ``tp``; raises ConfigError naming ``where``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _convert(value, option, where)
            except ConfigError:
                continue
        raise _wrong(where, tp, value)
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise _wrong(where, tp, value)
    if origin is list:
        if not isinstance(value, list):
            raise _wrong(where, tp, value)
        (item,) = typing.get_args(tp)
        return [_convert(v, item, f"{where}[{k}]") for k, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _wrong(where, tp, value)
        key_tp, value_tp = typing.get_args(tp)
        return {
            _convert(k, key_tp, f"{where}.{k}"): _convert(v, value_tp, f"{where}.{k}")
            for k, v in value.items()
        }
    if tp is type(None):
        if value is None:
            return None
        raise _wrong(where, tp, value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _wrong(where, tp, value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _wrong(where, tp, value)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _wrong(where, tp, value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _wrong(where, tp, value)
    raise TypeError(f"config type {tp} of {where} is not supported")  # a bug in this module


def _wrong(where: str, tp, value) -> ConfigError:
    return ConfigError(
        f"config key {where!r}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}"
    )


def _public_fields(cls) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if not f.metadata.get("internal")]


def _build(cls, data, where: str):
    """An instance of the dataclass ``cls`` from a mapping, every key checked."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config section {where or 'top level'!r}: expected a mapping of keys, got "
            f"{type(data).__name__} {data!r}"
        )
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in _public_fields(cls)]
    values = {}
    for key, value in data.items():
        dotted = f"{where}.{key}" if where else str(key)
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"unknown config key {dotted!r}{hint}; valid keys"
                f"{' of ' + repr(where) if where else ''}: {', '.join(valid)}"
            )
        values[key] = _convert(value, hints[key], dotted)
    return cls(**values)


def _check(config: CampaignConfig) -> None:
    """Rules between keys and value ranges; raise ConfigError naming the key."""

    def need(ok: bool, key: str, message: str):
        if not ok:
            raise ConfigError(f"config key {key!r}: {message}")

    need(bool(config.data.structures), "data.structures", "give the start structures")
    need(config.data.initial_frames >= 0, "data.initial_frames", "must be >= 0")
    need(0.0 < config.data.valid_fraction < 1.0, "data.valid_fraction", "must be in (0, 1)")
    need(config.data.rattle >= 0, "data.rattle", "must be >= 0")
    need(
        config.oracle.kind != "import" or bool(config.oracle.calculator),
        "oracle.calculator",
        "kind=import needs an import path such as 'mypackage.module:MyCalculator'",
    )
    need(config.model.ensemble >= 1, "model.ensemble", "must be >= 1")
    need(
        (config.uncertainty.method == "ensemble") == (config.model.ensemble > 1),
        "uncertainty.method",
        f"{config.uncertainty.method!r} with model.ensemble={config.model.ensemble}: "
        "use method 'ensemble' exactly when model.ensemble > 1",
    )
    need(config.model.cutoff > 0, "model.cutoff", "must be positive (A)")
    for key in ("max_epochs", "batch_size", "num_nodes"):
        need(getattr(config.training, key) >= 1, f"training.{key}", "must be >= 1")
    need(config.uncertainty.sigma > 0, "uncertainty.sigma", "must be positive")
    need(0.0 < config.uncertainty.alpha < 1.0, "uncertainty.alpha", "must be in (0, 1)")
    for key in ("walkers", "steps", "sample_every"):
        need(getattr(config.exploration, key) >= 1, f"exploration.{key}", "must be >= 1")
    need(config.exploration.timestep > 0, "exploration.timestep", "must be positive (fs)")
    need(config.exploration.temperature >= 0, "exploration.temperature", "must be >= 0 (K)")
    need(config.exploration.bias.window >= 1, "exploration.bias.window", "must be >= 1")
    need(config.selection.batch_size >= 1, "selection.batch_size", "must be >= 1")
    need(config.stop.iterations >= 0, "stop.iterations", "must be >= 0")
    need(config.executor.workers >= 1, "executor.workers", "must be >= 1")
    from ase.data import atomic_numbers

    for symbol in config.exploration.bias.species:
        need(
            symbol in atomic_numbers,
            f"exploration.bias.species.{symbol}",
            "not a chemical symbol",
        )


def from_dict(data: dict, base_dir: str | Path = ".") -> CampaignConfig:
    """A validated :class:`CampaignConfig` from a mapping (as read from YAML)."""
    config = _build(CampaignConfig, data, "")
    config.base_dir = str(Path(base_dir).resolve())
    _check(config)
    return config


def load(path: str | Path) -> CampaignConfig:
    """Read and validate a campaign YAML file. Raises FileNotFoundError or ConfigError."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"campaign file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{str(path)!r} is not valid YAML: {err}") from err
    config = from_dict(data or {}, base_dir=path.parent)
    if config.folder is None:
        config.folder = path.stem
    return config


def to_dict(config) -> dict:
    """The public keys of a config (or a section) as plain data, ready for YAML/JSON."""
    out = {}
    for f in _public_fields(type(config)):
        value = getattr(config, f.name)
        if isinstance(value, list):
            value = [to_dict(v) if dataclasses.is_dataclass(v) else v for v in value]
        out[f.name] = to_dict(value) if dataclasses.is_dataclass(value) else value
    return out


def reference(cls=CampaignConfig, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(dotted key, type, default, doc) of every key, depth first, for the documentation."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in _public_fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows.append((key, "section", "", f.metadata["doc"]))
            rows.extend(reference(tp, key + "."))
            continue
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        rows.append((key, _type_name(tp), json.dumps(default), f.metadata["doc"]))
    return rows


def markdown_reference() -> str:
    """docs/config.md: every key with its type, default and meaning."""
    import yaml

    lines = [
        "# Configuration reference",
        "",
        "<!-- generated by `python -m uq_bias.campaign.config > docs/config.md`; do not edit -->",
        "",
        "A campaign is one YAML file. Every key is optional except `data.structures`; an unknown",
        "key or a wrong type stops `uq-bias run` before any work, naming the key. Paths are",
        "relative to the YAML file. Defaults in full:",
        "",
        "```yaml",
        yaml.safe_dump(to_dict(CampaignConfig()), sort_keys=False).rstrip(),
        "```",
        "",
        "## Top level",
        "",
        "| key | type | default | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for key, tp, default, doc in reference():
        if tp == "section":
            lines += ["", f"## `{key}`", "", doc, "", "| key | type | default | meaning |"]
            lines += ["| --- | --- | --- | --- |"]
        else:
            cell = tp.replace("|", "\\|")
            lines.append(f"| `{key}` | {cell} | `{default}` | {doc.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(markdown_reference(), end="")
