"""Checks that run before the first label: everything that can be known without a reference call.

:func:`check_campaign` runs after the config has been read (keys, types, ranges: see
:mod:`uq_bias.campaign.config`) and before the campaign folder is created, so a campaign that
would fail later fails now, in seconds, and leaves nothing behind:

* the optional packages the config needs are installed (:func:`check_extras`);
* the model file (``model.file``) loads and is an interatomic model, and knows every element of
  the start structures and of ``data.initial_data``;
* ``data.initial_data`` is readable and labelled;
* the first labelled frames (``data.initial_frames`` perturbed copies plus ``initial_data``)
  give at least one frame to train on, one to validate on and one to calibrate on. Their roles
  depend on their frame ids alone (:mod:`uq_bias.campaign.roles`), and the perturbed copies are
  made from the seed, so the split is known before any label;
* this machine has the devices ``device``, ``exploration.device`` and ``trainer`` ask for
  (:func:`check_machine`);
* the bias's ``weights`` name known elements, and ``gradient: closed_form`` has an ensemble;
* ``uncertainty.head`` is a head of the models (:func:`check_head`), and an ensemble started
  from ``model.file`` trains (:func:`check_ensemble_start`);
* ``stop.label_budget`` is at least what iteration 0 labels or takes;
* the oracle ``emt`` knows every element, of the start structures and ``data.initial_data``;
* the report's CVs fit those frames, and ``data.test`` is labelled and holds only their
  elements (:func:`check_test`);
* the campaign folder can be created and written, and holds none of the names a campaign
  writes (:data:`CAMPAIGN_ENTRIES`) unless uq-bias wrote them: a campaign pointed at a folder
  of the user's own (``folder: .``) would otherwise overwrite or clear their ``config.yaml``,
  ``data/`` or ``report/``.

:func:`check_resume` compares the config with the one a folder was started with: the keys of
:data:`FIXED` define the labels and must not change, unless the folder holds no label yet (then
the stale stage files are cleared and the campaign starts over with the corrected config).
The frames of the input files are compared too, by SHA-256 (:func:`check_inputs_unchanged`).
One exception: ``data.initial_frames`` may grow until iteration 0's labelling is done (the
first n perturbed frames do not depend on how many follow), so a campaign whose oracle failed
on too many initial frames can label more of them and keep the labels it has.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
from ase import Atoms

from uq_bias.campaign import config as cfg
from uq_bias.campaign.state import CampaignState, read_json, with_id, write_json, write_text

#: Config keys that define the data and the model; they must not change when a campaign resumes
#: with labels in its folder.
FIXED = ("seed", "data", "oracle", "model")
#: The sections that may change on resume.
MAY_CHANGE = ("training", "trainer", "uncertainty", "calibration", "exploration", "selection")
MAY_CHANGE += ("stop", "executor", "report", "device", "folder")
#: What a campaign writes at the top of its folder (:class:`CampaignState`, :func:`check_resume`).
CAMPAIGN_ENTRIES = ("config.yaml", "journal.json", "log.txt", "data", "iterations", "report")
CAMPAIGN_ENTRIES += ("inputs.json",)
#: SHA-256 of the input frames the labels come from (:func:`check_inputs_unchanged`).
INPUTS = "inputs.json"
#: The file that marks a folder as a campaign's, written before anything else in it.
MARKER = ".uq_bias_campaign"


def _elements(frames: list[Atoms]) -> set[int]:
    return {int(z) for atoms in frames for z in atoms.numbers}


def _symbols(numbers) -> list[str]:
    from ase.data import chemical_symbols

    return [chemical_symbols[z] for z in sorted(numbers)]


def initial_data(config: cfg.CampaignConfig) -> list[Atoms]:
    """The labelled frames of ``data.initial_data`` (none without it), each with a frame id."""
    if not config.data.initial_data:
        return []
    from uq_bias.training.labels import read_frames

    try:
        frames = read_frames(config.path(config.data.initial_data))
    except (OSError, ValueError) as err:
        raise cfg.ConfigError(f"config key 'data.initial_data': {err}") from err
    return [with_id(a) for a in frames]


def check_extras(config: cfg.CampaignConfig) -> None:
    """The optional packages the config needs are installed: mace-torch for a fresh model
    (``model.file: null``), dask distributed for ``executor.kind: dask``."""
    if not config.model.file:
        from uq_bias.models.mace import import_mace

        try:
            import_mace()
        except ImportError as err:
            raise cfg.ConfigError(
                f"config key 'model.file': null builds a fresh MACE model: {err}"
            ) from err
    if config.executor.kind == "dask":
        try:
            import distributed  # noqa: F401
        except ImportError as err:
            raise cfg.ConfigError(
                f"config key 'executor.kind': dask needs dask distributed ({err}): "
                "`pip install uq_bias[dask]`, or choose kind: process"
            ) from err


def check_machine(config: cfg.CampaignConfig) -> None:
    """This machine has what ``device``, ``exploration.device`` (unless dask workers run the
    walkers elsewhere) and ``trainer`` ask for: a CUDA device, Lightning's accelerator."""
    from uq_bias.device import resolve_device
    from uq_bias.training.train import check_trainer

    keys = {"device": config.device}
    if config.executor.kind != "dask":
        keys["exploration.device"] = config.exploration.device
    for key, value in keys.items():
        try:
            resolve_device(value)
        except ValueError as err:
            raise cfg.ConfigError(f"config key {key!r}: {err}") from err
    try:
        check_trainer(config.trainer, config.training.max_epochs)
    except ValueError as err:
        raise cfg.ConfigError(f"config key 'trainer': {err}") from err


def check_model_file(config: cfg.CampaignConfig, frames: list[Atoms]) -> set[int]:
    """``model.file`` loads, is an interatomic model, and knows every element of ``frames``.
    Returns the elements the model knows (a fresh model: those of ``frames``)."""
    if not config.model.file:
        return _elements(frames)
    from uq_bias.models import load_model

    path = config.path(config.model.file)
    if not path.is_file():
        raise cfg.ConfigError(f"config key 'model.file': no model file {str(path)!r}")
    head = config.uncertainty.head
    try:
        model = load_model(path, head=head)
    except (OSError, ValueError, TypeError, AttributeError, ImportError) as err:
        if head is not None and "head" in str(err):  # the file loads, the head is not in it
            raise cfg.ConfigError(f"config key 'uncertainty.head': {err}") from err
        raise cfg.ConfigError(
            f"config key 'model.file': {str(path)!r} is not a model uq_bias can train: {err}"
        ) from err
    missing = _elements(frames) - set(int(z) for z in model.atomic_numbers)
    if missing:
        raise cfg.ConfigError(
            f"config key 'model.file': the model {str(path)!r} knows the elements "
            f"{_symbols(model.atomic_numbers)}, and the start structures or data.initial_data "
            f"hold {_symbols(missing)} too; give a model trained on them, or model.file: null "
            "for a fresh model"
        )
    return {int(z) for z in model.atomic_numbers}


def check_bias(config: cfg.CampaignConfig, known: set[int]) -> None:
    """The bias's per-element ``weights`` name elements the model knows, and ``gradient:
    closed_form`` has an ensemble to take it from."""
    from uq_bias.bias.weights import weight_table

    bias = config.exploration.bias
    try:
        weight_table(bias.weights, tuple(sorted(known)))  # what the bias builds at explore time
    except ValueError as err:
        raise cfg.ConfigError(f"config key 'exploration.bias.weights': {err}") from err
    if bias.gradient == "closed_form" and config.model.ensemble < 2:
        raise cfg.ConfigError(
            "config key 'exploration.bias.gradient': closed_form is the gradient of an ensemble's "
            "spread and needs model.ensemble >= 2; use auto or autograd"
        )


def first_frames(config: cfg.CampaignConfig, structures: list[Atoms]) -> list[Atoms]:
    """The frames iteration 0 sends to the oracle, as :func:`stages.label_initial` makes them
    (same seed, same order), with their frame ids; no label is computed."""
    import numpy as np

    from uq_bias.campaign.stages import perturbed

    d = config.data
    rng = np.random.default_rng(config.seed)
    out = []
    for i in range(d.initial_frames):
        a = perturbed(structures[i % len(structures)], rng, d.rattle, d.strain)
        out.append(with_id(Atoms(a.numbers, a.positions, cell=a.cell, pbc=a.pbc)))
    return out


def check_first_split(
    config: cfg.CampaignConfig, frames: list[Atoms], structures: list[Atoms] | None = None
) -> None:
    """The first labelled ``frames`` give a frame to validate and to calibrate on, and enough
    to train on: one for a deep ensemble, two for gradient features (their posterior scale and
    distances need two training structures). With the ``structures`` the initial frames come
    from, the message names the smallest ``data.initial_frames`` that would do."""
    d = config.data
    empty = _short_roles(config, frames)
    if empty:
        given = f"{d.initial_frames} initial frames"
        if d.initial_data:
            given += f" and {len(frames) - d.initial_frames} frames of data.initial_data"
        enough = None if structures is None else _enough(config, frames, structures)
        advice = f"{enough} or more" if enough else "more"
        raise cfg.ConfigError(
            f"config key 'data.initial_frames': {given} leave too few frames for "
            f"{' or '.join(empty)} (valid_fraction {d.valid_fraction}, calibration_fraction "
            f"{d.calibration_fraction}); the first model needs frames to train, validate and "
            f"calibrate on: set data.initial_frames to {advice} (8 is the default)"
        )


def check_budget(config: cfg.CampaignConfig, n_given: int) -> None:
    """``stop.label_budget`` holds at least the frames iteration 0 labels or takes."""
    budget, n_first = config.stop.label_budget, config.data.initial_frames + n_given
    if budget is not None and budget < n_first:
        raise cfg.ConfigError(
            f"config key 'stop.label_budget': {budget} is below the {n_first} frames iteration 0 "
            f"labels or takes (data.initial_frames {config.data.initial_frames} + "
            f"{n_given} of data.initial_data); raise the budget (to end a campaign now, set "
            "stop.iterations to its last iteration), or in a new campaign lower "
            "data.initial_frames"
        )


def _short_roles(config: cfg.CampaignConfig, frames: list[Atoms]) -> list[str]:
    """The roles the first split leaves short, in words (none: it will do)."""
    from uq_bias.campaign.roles import short_roles

    d = config.data
    return short_roles(
        frames, d.valid_fraction, d.calibration_fraction, config.seed, config.model.ensemble
    )


def _enough(config: cfg.CampaignConfig, frames: list[Atoms], structures: list[Atoms]) -> int | None:
    """The smallest ``data.initial_frames`` whose first split will do (None past 64 more)."""
    from dataclasses import replace

    given = frames[config.data.initial_frames :]
    for n in range(config.data.initial_frames + 1, config.data.initial_frames + 65):
        more = replace(config, data=replace(config.data, initial_frames=n))
        if not _short_roles(more, first_frames(more, structures) + given):
            return n
    return None


def check_oracle_elements(config: cfg.CampaignConfig, structures: list[Atoms]) -> None:
    """The ``emt`` oracle has parameters for every element of ``structures`` (the start
    structures and data.initial_data, where walkers may start)."""
    if config.oracle.kind != "emt":
        return
    from ase.calculators.emt import parameters
    from ase.data import atomic_numbers

    known = {atomic_numbers[s] for s in parameters}
    missing = _elements(structures) - known
    if missing:
        raise cfg.ConfigError(
            f"config key 'oracle.kind': emt has no parameters for {_symbols(missing)} (it knows "
            f"{_symbols(known)}); choose gfn2-xtb, gfn1-xtb or import"
        )


def check_folder(path: Path) -> None:
    """The campaign folder ``path`` exists as a writable folder, or can be made."""
    where = f"config key 'folder': the campaign folder {str(path)!r}"
    if path.exists() and not path.is_dir():
        raise cfg.ConfigError(f"{where} is a file; give a folder name")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise cfg.ConfigError(f"{where} cannot be made: {str(parent)!r} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise cfg.ConfigError(f"{where} cannot be written: no write permission on {str(parent)!r}")
    taken = [name for name in CAMPAIGN_ENTRIES if (path / name).exists()]
    if taken and not is_campaign_folder(path):
        raise cfg.ConfigError(
            f"{where} holds {taken}, which no campaign wrote (no {MARKER} file there); a "
            "campaign writes these names and would overwrite or clear them (a campaign YAML "
            "named config.yaml in its own folder too). Give a new or empty folder, or move "
            "those files away"
        )


def is_campaign_folder(path: Path) -> bool:
    """Whether a campaign made the folder ``path``: it has the :data:`MARKER` file, or (folders
    from before the marker) a ``log.txt`` and a ``config.yaml`` with the sections ``data``,
    ``oracle`` and ``model`` that :func:`check_resume` writes in full."""
    import yaml

    from uq_bias import yaml_text

    if (path / MARKER).is_file():
        return True
    try:
        data = yaml_text.load((path / "config.yaml").read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    sections = isinstance(data, dict) and {"data", "oracle", "model"} <= data.keys()
    return sections and (path / "log.txt").is_file()


def check_head(config: cfg.CampaignConfig) -> None:
    """``uncertainty.head`` names the one head of a fresh MACE model ('Default'); a model
    file's heads are checked as it loads (:func:`check_model_file`)."""
    head = config.uncertainty.head
    if head is None or config.model.file:
        return
    from uq_bias.models.mace import resolve_head

    try:
        resolve_head(["Default"], head)
    except ValueError as err:
        raise cfg.ConfigError(
            f"config key 'uncertainty.head': {err} (a fresh model, model.file: null)"
        ) from err


def check_ensemble_start(config: cfg.CampaignConfig) -> None:
    """An ensemble fine-tuned from one ``model.file`` trains: with ``max_epochs: 0`` every
    member would be that file, with no spread to measure."""
    m = config.model
    if m.file and m.ensemble > 1 and config.training.max_epochs == 0:
        raise cfg.ConfigError(
            f"config key 'training.max_epochs': 0 leaves all {m.ensemble} ensemble members equal "
            f"to model.file {m.file!r} (no spread, no uncertainty); train them (max_epochs >= 1), "
            "or use model.ensemble: 1 (gradient features of the one model)"
        )


def check_cvs(config: cfg.CampaignConfig, structures: list[Atoms], given: list[Atoms]) -> None:
    """The report's collective variables fit every start structure and data.initial_data frame."""
    from uq_bias.campaign import cvs

    for what, frames in (("start structure", structures), ("data.initial_data frame", given)):
        for k, atoms in enumerate(frames):
            try:
                cvs.check(config.report.cvs, len(atoms))
            except ValueError as err:
                raise cfg.ConfigError(f"config key {err} ({what} {k})") from err


def check_test(config: cfg.CampaignConfig, frames: list[Atoms]) -> None:
    """``data.test`` reads as labelled frames whose elements all occur in ``frames`` (the
    start structures and data.initial_data: what the models are trained on)."""
    if not config.data.test:
        return
    from uq_bias.campaign.roles import read_test

    try:
        test = read_test(config.path(config.data.test))
    except (OSError, ValueError) as err:
        raise cfg.ConfigError(
            f"config key 'data.test': cannot use {config.data.test!r} as a test set: {err}"
        ) from err
    if not test:
        raise cfg.ConfigError(f"config key 'data.test': {config.data.test!r} has no frames")
    extra = _elements(test) - _elements(frames)
    if extra:
        raise cfg.ConfigError(
            f"config key 'data.test': {config.data.test!r} holds {_symbols(extra)}, which no "
            "start structure or data.initial_data frame has (the models never see them); "
            "give a test set of the campaign's elements"
        )


def check_campaign(config: cfg.CampaignConfig, structures: list[Atoms]) -> None:
    """Every check of the module docstring, in order; raise ConfigError naming the key."""
    given = initial_data(config)
    check_extras(config)
    check_bias(config, check_model_file(config, structures + given))
    check_head(config)
    check_ensemble_start(config)
    check_oracle_elements(config, structures + given)
    check_cvs(config, structures, given)
    check_test(config, structures + given)
    check_first_split(config, first_frames(config, structures) + given, structures)
    check_budget(config, len(given))
    check_machine(config)
    check_folder(config.path(config.folder or "campaign"))


# -- resuming -----------------------------------------------------------------------------------


def _flat(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and value and key != "kwargs":
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def labels_spent(state: CampaignState) -> int:
    """Frames the oracle has labelled in this folder (in the data or in any iteration's
    ``labels/``; not the frames it failed on, which hold no label to keep consistent)."""
    files = state.root.glob("iterations/*/labels/*.extxyz")
    return max(len(state.labelled()), sum(1 for _ in files))


def _conflict_message(state: CampaignState, changed: dict, n_labels: int) -> str:
    values = "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changed.items())
    data = state.data_path
    return (
        f"the campaign folder {str(state.root)!r} holds {n_labels} labels made with other values "
        f"of {list(changed)} ({values}); the keys under {list(FIXED)} define those labels and "
        "must stay as they were. What you can do: (1) put the old values back to resume (only "
        f"the keys under {list(MAY_CHANGE)} may change on resume); (2) start a new campaign: "
        "set 'folder' to a new name, or copy the YAML file under a new name; (3) to reuse the "
        f"labelled frames in that new campaign, set 'data.initial_data: {data}' (taken as they "
        "are, no reference call), or train on them with `uq-bias train`"
    )


def input_hashes(config: cfg.CampaignConfig) -> dict[str, str]:
    """A SHA-256 of the frames of each input file the labels come from, by config key:
    ``data.structures`` (not a builtin: their frame ids, so a file saved again with the same
    structures keeps it) and ``data.initial_data`` (frame ids, energies and forces)."""
    import hashlib

    from uq_bias.io_structures import frame_id, read_structures

    out = {}
    for name in ("structures", "initial_data"):
        spec = getattr(config.data, name)
        if not spec or str(spec).startswith("builtin:") or not config.path(spec).is_file():
            continue
        digest = hashlib.sha256()
        for atoms in read_structures(config.path(spec), f"data.{name}"):
            digest.update(frame_id(atoms).encode())
            if name == "initial_data" and atoms.calc is not None:
                for key in ("energy", "forces"):
                    digest.update(np.asarray(atoms.calc.results.get(key, 0.0)).tobytes())
        out[f"data.{name}"] = digest.hexdigest()
    return out


def check_inputs_unchanged(state: CampaignState, config: cfg.CampaignConfig) -> None:
    """Refuse to resume a folder with labels when an input file's frames changed since they
    were made (:func:`check_resume` compares the paths alone): the data would mix two systems.
    Writes the current hashes to :data:`INPUTS`."""
    path = state.root / INPUTS
    now, before = input_hashes(config), read_json(path, {})
    changed = [key for key in now if key in before and before[key] != now[key]]
    n_labels = labels_spent(state) if changed else 0
    if n_labels:
        files = ", ".join(
            f"{key} ({str(config.path(getattr(config.data, key.split('.')[1])))!r})"
            for key in changed
        )
        raise cfg.ConfigError(
            f"config key {changed[0]!r}: the frames of {files} changed since the campaign "
            f"folder {str(state.root)!r} made its {n_labels} labels; put the old file back to "
            "resume, or start a new campaign (a new 'folder') with the new file"
        )
    write_json(path, now)


def _more_initial_frames(state: CampaignState, changed: dict) -> bool:
    """``data.initial_frames`` alone grew, before iteration 0's labelling was done."""
    old, new = changed.get("data.initial_frames", (None, None))
    grows = isinstance(old, int) and isinstance(new, int) and new > old
    return grows and not state.done(0, "label")


def check_resume(state: CampaignState, config: cfg.CampaignConfig) -> None:
    """Refuse to resume a folder whose labels were made with other data, oracle, model or seed
    (keys that exist in only one of the two versions, e.g. after an upgrade, are not compared).
    A folder with no label yet takes the new config: its stage files are cleared. The input
    files' content must not have changed either (:func:`check_inputs_unchanged`). Writes the
    :data:`MARKER` file, :data:`INPUTS` and ``config.yaml``."""
    import yaml

    from uq_bias import yaml_text

    write_text(state.root / MARKER, "a uq_bias campaign folder\n")
    path = state.root / "config.yaml"
    current = cfg.to_dict(config)
    if path.is_file():
        before = _flat(yaml_text.load(path.read_text()) or {})
        now = _flat(current)
        changed = {
            key: (before[key], now[key])
            for key in now
            if key.split(".")[0] in FIXED and key in before and before[key] != now[key]
        }
        if _more_initial_frames(state, changed):
            state.log(f"data.initial_frames raised {changed.pop('data.initial_frames')}")
        if changed:
            n_labels = labels_spent(state)
            if n_labels:
                raise cfg.ConfigError(_conflict_message(state, changed, n_labels))
            for stale in ("iterations", "data", "report"):
                shutil.rmtree(state.root / stale, ignore_errors=True)
            state.journal_path.unlink(missing_ok=True)
            state.log(f"config changed before any label ({list(changed)}): starting over")
    check_inputs_unchanged(state, config)
    write_text(path, yaml.safe_dump(current, sort_keys=False))
