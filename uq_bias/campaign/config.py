"""The campaign configuration: the library's option types, composed into one YAML file.

The sections are the types the stages hand to the library (``training`` is a
:class:`~uq_bias.training.FitOptions`, ``exploration`` an
:class:`~uq_bias.dynamics.ExploreConfig` plus the walkers and the bias, ...), so an option added
to a library type is a YAML key at once. Only what exists for the campaign alone (data, model
file and ensemble size, stop rules, executor, report) is declared here. Every key is documented
where it is declared (:func:`uq_bias.options.option`); ``docs/config.md`` is generated from the
declarations (``python -m uq_bias.docs``).

Validation is strict and happens before any work (:func:`uq_bias.options.build`): an unknown key
is an error naming its dotted path and the valid keys; a wrong type names the key, the expected
type and what came; the library types' own checks name the key they blame. Paths in the file are
relative to the YAML file's folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from uq_bias.bias import BiasConfig
from uq_bias.campaign.cvs import CollectiveVariable
from uq_bias.campaign.oracles import OracleSpec
from uq_bias.dynamics.walker import ExploreConfig, check_pressure
from uq_bias.options import (
    INTERNAL,
    ConfigError,
    build,
    dataclass_in,
    list_item_dataclass,
    option,
    type_name,
    walk,
)
from uq_bias.options import to_dict as _plain
from uq_bias.selection.api import SelectionOptions
from uq_bias.training.build import ModelOptions
from uq_bias.training.train import FitOptions, TrainerOptions
from uq_bias.uncertainty.calibration import CalibrationOptions
from uq_bias.uncertainty.gradient import UncertaintyOptions

__all__ = ["CampaignConfig", "ConfigError", "from_dict", "load", "markdown_reference", "to_dict"]


@dataclass
class DataConfig:
    """Where the campaign starts: structures for the walkers and the first labelled frames."""

    structures: str = option(
        "",
        "Start structures: a file ASE can read (relative to the YAML file) or `builtin:NAME` "
        "with NAME one of alanine_dipeptide, cu_fcc, cual_fcc.",
    )
    initial_frames: int = option(
        8, "Rattled copies of the start structures labelled before the first iteration."
    )
    rattle: float = option(
        0.05, "Standard deviation of the rattle of the initial frames.", unit="A"
    )
    strain: float = option(
        0.03,
        "Periodic initial frames: random symmetric strain, each component uniform in "
        "[-strain, strain] (cell and positions scaled together); 0 switches it off.",
    )
    initial_data: str | None = option(
        None, "Optional extended XYZ of frames already labelled (energy, forces) to start from."
    )
    valid_fraction: float = option(
        0.15,
        "Share of labelled frames held out for validation (early stopping, best weights), chosen "
        "by frame id, so a frame never changes role as the data grow.",
    )
    calibration_fraction: float = option(
        0.15,
        "Share of labelled frames held out for calibration only, disjoint from validation and "
        "training (by frame id); 0 calibrates on the validation frames (optimistic coverage).",
    )
    test: str | None = option(
        None,
        "Optional extended XYZ of labelled test frames, never trained on, calibrated on, "
        "stopped on or selected from; the metrics and the target-RMSE stop rule use it.",
    )

    def __post_init__(self):
        if self.initial_frames < 0:
            raise ValueError(f"initial_frames must be >= 0, got {self.initial_frames}")
        if not 0.0 < self.valid_fraction < 1.0:
            raise ValueError(f"valid_fraction must be in (0, 1), got {self.valid_fraction}")
        if not 0.0 <= self.calibration_fraction < 1.0 - self.valid_fraction:
            raise ValueError(
                f"calibration_fraction must be >= 0 and leave frames to train on "
                f"(valid_fraction + calibration_fraction < 1), got {self.calibration_fraction} "
                f"with valid_fraction {self.valid_fraction}"
            )
        if self.rattle < 0:
            raise ValueError(f"rattle must be >= 0 (A), got {self.rattle}")
        if not 0 <= self.strain < 0.5:
            raise ValueError(f"strain must be >= 0 and < 0.5, got {self.strain}")


@dataclass(frozen=True)
class ModelConfig(ModelOptions):
    """The MACE model (or ensemble) that is trained: a fresh one of ``preset`` size, or ``file``."""

    file: str | None = option(
        None,
        "Existing MACE model file to start from (a pickle: trusted files only); null builds a "
        "fresh model from `preset`.",
    )
    ensemble: int = option(
        1,
        "Members of a deep ensemble (its uncertainty replaces the gradient features); 1: one. "
        "Members started from one `file` differ only in their batch order, so their spread "
        "underestimates the error: from a model file, prefer gradient features (1).",
    )
    fine_tune: bool = option(
        True, "Start each iteration's training from the previous iteration's model."
    )

    def __post_init__(self):
        super().__post_init__()
        if self.ensemble < 1:
            raise ValueError(f"ensemble must be >= 1, got {self.ensemble}")


@dataclass(frozen=True)
class ExplorationConfig(ExploreConfig):
    """Uncertainty-biased molecular dynamics from several walkers."""

    walkers: int = option(2, "Independent MD runs per iteration.")
    start: Literal["structures", "labelled", "last"] = option(
        "structures",
        "Walkers start from the start structures, from the most recently labelled frames, or "
        "(last) from where each walker stopped in the previous iteration (one trajectory per "
        "walker; the start structure again after a blow-up).",
    )
    bias: BiasConfig = option(BiasConfig(), "The uncertainty bias (tau: 0 for plain MD).")
    ladder: list[list[float]] | None = option(
        None,
        "[[T, P], ...]: walker i runs at the temperature (K) and pressure (GPa) of point "
        "i mod len (a temperature/pressure ladder, as DP-GEN users explore); P needs NPT. "
        "null: every walker at temperature and pressure.",
    )

    def __post_init__(self):
        super().__post_init__()
        if self.walkers < 1:
            raise ValueError(f"walkers must be >= 1, got {self.walkers}")
        if self.ladder is not None:
            self._check_ladder()

    def _check_ladder(self) -> None:
        points = [list(p) for p in self.ladder]
        ok = points and all(len(p) == 2 and all(np.isfinite(x) for x in p) for p in points)
        if not ok or any(p[0] <= 0 for p in points):
            raise ValueError(
                f"ladder must be a non-empty list of [T, P] pairs with T > 0 K, got {self.ladder!r}"
            )
        if self.engine == "batched":
            raise ValueError(
                "ladder needs engine: ase (the batched engine runs one temperature "
                "and pressure per batch)"
            )
        for k, (_, pressure) in enumerate(points):
            check_pressure(pressure, f"ladder point {k}: pressure")
        if self.ensemble != "npt" and any(p[1] != 0 for p in points):
            raise ValueError(
                "ladder gives pressures, which need ensemble: npt (got "
                f"{self.ensemble!r}); use P = 0 for NVT runs"
            )

    def walker_conditions(self, i: int) -> tuple[float, float]:
        """(temperature K, pressure GPa) of walker ``i``."""
        if self.ladder is None:
            return self.temperature, self.pressure
        t, p = self.ladder[i % len(self.ladder)]
        return float(t), float(p)


@dataclass(frozen=True)
class SelectionConfig(SelectionOptions):
    """Which candidates are labelled."""

    batch_size: int = option(8, "Frames labelled per iteration.")
    thermal_band: float | None = option(
        3.0,
        "Biased walkers' candidates are chosen among those whose unbiased energy per atom, above "
        "the model's energy of their start structure, is at most the harmonic thermal mean plus "
        "this many standard deviations at the walker's temperature (uq_bias.selection.thermal; "
        "the lowest-lying others fill in when fewer than batch_size are in it); null: every "
        "candidate. Plain MD (tau 0) is thermal already and is never filtered.",
        unit="thermal std",
    )

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        band = self.thermal_band
        if band is not None and not (np.isfinite(band) and band >= 0):
            raise ValueError(
                f"selection.thermal_band must be a number >= 0 (standard deviations of the "
                f"thermal energy) or null, got {band!r}"
            )


@dataclass
class StopConfig:
    """When the campaign ends (whichever comes first)."""

    iterations: int = option(5, "Active-learning iterations.")
    label_budget: int | None = option(
        None, "Largest number of labelled frames, initial ones included."
    )
    target_forces_rmse: float | None = option(
        None,
        "Stop once the force RMSE is below this, on data.test if given, else on the validation "
        "frames.",
        unit="eV/A",
    )
    target_energy_rmse: float | None = option(
        None,
        "Stop once the energy RMSE is below this, on data.test if given, else on the "
        "validation frames.",
        unit="eV/atom",
    )

    def __post_init__(self):
        if self.iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {self.iterations}")
        if self.label_budget is not None and self.label_budget < 1:
            raise ValueError(f"label_budget must be >= 1 (or null), got {self.label_budget}")
        for name in ("target_forces_rmse", "target_energy_rmse"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 (or null), got {value}")


@dataclass
class ExecutorConfig:
    """Where labelling and walkers run."""

    kind: Literal["inprocess", "process", "dask"] = option(
        "inprocess",
        "inprocess, process (a local process pool), or dask (a Dask distributed cluster).",
    )
    workers: int = option(2, "Processes of the local pool or of a local Dask cluster.")
    address: str | None = option(
        None, "Dask scheduler address (tcp://host:8786); null starts a local Dask cluster."
    )
    threads_per_worker: int = option(1, "Torch threads in each worker.")

    def __post_init__(self):
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")


@dataclass
class ReportConfig:
    """The markdown report and its plots."""

    plots: bool = option(True, "Write PNG plots beside the report.")
    ramachandran: bool | None = option(
        None,
        "Without report.cvs, use a peptide backbone's phi and psi (if found; the Ramachandran "
        "plane), else a molecule's backbone torsions (uq_bias.torsions; coverage: the mean over "
        "torsion pairs), for the coverage and the CV map; false: no automatic CVs.",
    )
    cvs: list[CollectiveVariable] = option(
        [],
        "Collective variables for the coverage of CV space: a list of {name, kind: dihedral, "
        "distance, volume or shear, atoms, period, range}; empty: see report.ramachandran.",
    )


@dataclass
class CampaignConfig:
    """A whole active-learning campaign."""

    folder: str | None = option(
        None,
        "Campaign folder (relative to the YAML file); null: a folder named like the YAML file "
        "beside it.",
    )
    seed: int = option(0, "Seed of everything random (rattles, splits, models, sketches, MD).")
    device: str = option(
        "auto",
        "Where the uncertainty model runs for calibration, metrics, exploration MD and "
        "selection: auto (a GPU when the process sees one), cpu, cuda or cuda:<k>; each worker "
        "resolves it itself (training: trainer.accelerator; MD: exploration.device overrides).",
    )
    data: DataConfig = option(DataConfig(), "Start structures and first data.")
    oracle: OracleSpec = option(OracleSpec(), "The reference method that labels frames.")
    model: ModelConfig = option(ModelConfig(), "The model to train.")
    training: FitOptions = option(FitOptions(), "Training of each member (Lightning).")
    trainer: TrainerOptions = option(TrainerOptions(), "The Lightning Trainer: devices, strategy.")
    uncertainty: UncertaintyOptions = option(
        UncertaintyOptions(), "Gradient-feature uncertainty (single models; ensembles: head only)."
    )
    calibration: CalibrationOptions = option(
        CalibrationOptions(), "Calibration on the calibration frames (see data)."
    )
    exploration: ExplorationConfig = option(ExplorationConfig(), "Biased MD.")
    selection: SelectionConfig = option(SelectionConfig(), "Batch selection.")
    stop: StopConfig = option(StopConfig(), "Stopping rules.")
    executor: ExecutorConfig = option(ExecutorConfig(), "Labelling and walker execution.")
    report: ReportConfig = option(ReportConfig(), "Report.")
    base_dir: str = field(default=".", metadata={INTERNAL: True})

    def path(self, value: str) -> Path:
        """``value`` resolved against the YAML file's folder."""
        path = Path(value).expanduser()
        return path if path.is_absolute() else Path(self.base_dir) / path


#: Options of the library types that the campaign sets itself, and how; not YAML keys.
SET_BY_CAMPAIGN: dict[str, str] = {
    "training.seed": "`seed` + 1000 k + j for member j of iteration k",
    "trainer.progress_bar": "off",
    "uncertainty.seed": "`seed`",
    "exploration.seed": "1000 `seed` + k in iteration k",
    "exploration.progress": "off (walkers run in workers)",
    "selection.seed": "`seed` + k in iteration k",
}


def _check(config: CampaignConfig) -> None:
    """Rules between keys; raise ConfigError naming the key."""
    from uq_bias.device import check_device_name

    if not config.data.structures:
        raise ConfigError("config key 'data.structures': give the start structures")
    try:
        check_device_name(config.device)
    except ValueError as err:
        raise ConfigError(f"config key 'device': {err}") from err


def from_dict(data: dict, base_dir: str | Path = ".") -> CampaignConfig:
    """A validated :class:`CampaignConfig` from a mapping (as read from YAML)."""
    hidden = {
        key: f"is set by the campaign ({how}); remove it" for key, how in SET_BY_CAMPAIGN.items()
    }
    config = build(CampaignConfig, data, "", hidden=hidden)
    config.base_dir = str(Path(base_dir).resolve())
    _check(config)
    return config


def load(path: str | Path) -> CampaignConfig:
    """Read and validate a campaign YAML file. Raises FileNotFoundError or ConfigError."""
    import yaml

    from uq_bias import yaml_text

    path = Path(path)
    if path.is_dir():
        raise ConfigError(
            f"campaign file {str(path)!r} is a folder; give the campaign's YAML file (a campaign "
            "folder is resumed by running the YAML file that started it again)"
        )
    if not path.is_file():
        raise FileNotFoundError(f"campaign file {str(path)!r} does not exist")
    try:
        data = yaml_text.load(path.read_text())
    except UnicodeDecodeError as err:
        raise ConfigError(f"campaign file {str(path)!r} is not a text (YAML) file: {err}") from err
    except yaml.YAMLError as err:
        where = " ".join(str(err).split())  # one line
        raise ConfigError(f"campaign file {str(path)!r} is not valid YAML: {where}") from err
    if data is not None and not isinstance(data, dict):
        raise ConfigError(
            f"campaign file {str(path)!r} holds a YAML {type(data).__name__}, not a mapping of "
            "keys (data:, oracle:, ...); see docs/config.md"
        )
    config = from_dict(data or {}, base_dir=path.parent)
    if config.folder is None:
        config.folder = path.stem
    return config


def to_dict(config) -> dict:
    """The YAML keys of a config (or a section) as plain data, ready for YAML/JSON; what
    :func:`from_dict` reads back."""
    data = _plain(config)
    if isinstance(config, CampaignConfig):
        for key in SET_BY_CAMPAIGN:
            section, name = key.split(".")
            data[section].pop(name, None)
    return data


def markdown_reference() -> str:
    """docs/config.md: every key with its type, default, unit and meaning."""
    import yaml

    lines = [
        "# Configuration reference",
        "",
        "<!-- generated by `python -m uq_bias.docs`; do not edit -->",
        "",
        "A campaign is one YAML file. Every key is optional except `data.structures`; an unknown",
        "key or a wrong type stops `uq-bias run` before any work, naming the key. Paths are",
        "relative to the YAML file. Each section is a library type (named in its heading), so",
        "the same options are flags of the `uq-bias` commands (see [the CLI](cli.md)).",
        "Defaults in full:",
        "",
        "```yaml",
        yaml.safe_dump(to_dict(CampaignConfig()), sort_keys=False).rstrip(),
        "```",
        "",
        "Set by the campaign itself (not keys of the file): "
        + "; ".join(f"`{key}`: {how}" for key, how in SET_BY_CAMPAIGN.items())
        + ".",
    ]
    lines += _reference_section(CampaignConfig, "", "Top level", "")
    return "\n".join(lines) + "\n"


def _reference_section(cls, prefix: str, title: str, doc: str) -> list[str]:
    """The table of one section's own keys, then its nested sections."""
    lines = ["", f"## {title}", ""] + ([doc, ""] if doc else [])
    lines += ["| key | type | default | unit | meaning |", "| --- | --- | --- | --- | --- |"]
    nested = []
    for row in walk(cls, prefix, deep=False):
        if row.key in SET_BY_CAMPAIGN:
            continue
        item = list_item_dataclass(row.type)
        if row.section:
            sub = dataclass_in(row.type)
            nested.append((sub, row.key + ".", f"`{row.key}` ({sub.__name__})", row.doc))
            continue
        if item is not None:
            nested.append((item, row.key + "[].", f"`{row.key}[]` ({item.__name__})", row.doc))
        cell = type_name(row.type).replace("|", "\\|")
        lines.append(
            f"| `{row.key}` | {cell} | `{row.default_text}` | {row.unit or ''} | "
            f"{row.doc.replace('|', '/')} |"
        )
    for args in nested:
        lines += _reference_section(*args)
    return lines
