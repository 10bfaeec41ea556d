"""Save and load fitted, calibrated uncertainty models: tensors + JSON, no pickled code.

A saved state is a folder with

* ``state.pt``: a dict of tensors (posterior factors, scales, sketches, calibration), read with
  ``torch.load(..., weights_only=True)``;
* ``uncertainty.json``: the model's ``kind`` (``gradient``, ``ensemble``, or that of any other
  :class:`~uq_bias.uncertainty.base.UncertaintyModel` subclass: they register themselves), its
  options, the model file path(s) when known, a fingerprint of each wrapped model, and the
  SHA-256 of ``state.pt`` (``state_sha256``; written last, so that a save interrupted between
  the two files leaves a pair that ``load`` refuses).

The model weights themselves are not in the state (model files are pickles: the user loads those
knowingly). The fingerprint, a SHA-256 of the model's elements, cutoff, last-layer shapes and all
its weights, makes loading the state for another model a clear error. Files are written
atomically (temporary file in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from uq_bias.atomic import write_bytes
from uq_bias.models import AtomisticModel, load_model
from uq_bias.uncertainty.base import REGISTRY, UncertaintyModel

FORMAT_VERSION = 1
STATE_FILE = "state.pt"
CONFIG_FILE = "uncertainty.json"


def model_summary(model: AtomisticModel) -> dict:
    """What identifies a model besides its weights: class, elements, cutoff, last-layer shapes."""
    return {
        "class": type(model).__name__,
        "atomic_numbers": [int(z) for z in model.atomic_numbers],
        "cutoff": float(model.cutoff),
        "n_features": int(model.n_features),
        "last_layer_shapes": [list(p.shape) for p in model.last_layer_parameters()],
    }


def model_fingerprint(model: AtomisticModel) -> str:
    """SHA-256 hex digest of :func:`model_summary` and every parameter and buffer's values."""
    digest = hashlib.sha256(json.dumps(model_summary(model), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _wrapped_prefixes(model: UncertaintyModel) -> tuple[str, ...]:
    """State-dict prefixes of the wrapped model(s), which are not part of the saved state."""
    wrapped = {id(m) for m in model.wrapped()}
    return tuple(name + "." for name, sub in model.named_modules() if id(sub) in wrapped)


def _own_state(model: UncertaintyModel) -> dict[str, torch.Tensor]:
    """The model's own tensors (buffers, parameters), without those of the wrapped model(s)."""
    skip = _wrapped_prefixes(model)
    return {k: v.detach().cpu() for k, v in model.state_dict().items() if not k.startswith(skip)}


def save(model: UncertaintyModel, path: str | Path) -> Path:
    """Save a fitted uncertainty model to the folder ``path``; returns the folder."""
    if not isinstance(model, UncertaintyModel) or not type(model).kind:
        raise TypeError(
            "save: expected an uq_bias UncertaintyModel with a registered kind (e.g. a "
            f"GradientFeatureUncertainty or an Ensemble), got {type(model).__name__}"
        )
    model.check_saveable()
    members, paths = model.wrapped(), list(model.wrapped_paths)
    path = Path(path)
    config = {
        "kind": type(model).kind,
        "options": model.options(),
        "format_version": FORMAT_VERSION,
        "model_paths": [_relative(p, path) for p in paths],
        "model_paths_absolute": [None if p is None else str(Path(p).resolve()) for p in paths],
        "models": [model_summary(m) for m in members],
        "fingerprints": [model_fingerprint(m) for m in members],
    }
    buffer = io.BytesIO()
    torch.save(_own_state(model), buffer)
    # each file is written atomically, the state first; the config records the state's checksum,
    # so a save interrupted between the two leaves a pair that load refuses
    config["state_sha256"] = hashlib.sha256(buffer.getvalue()).hexdigest()
    write_bytes(path / STATE_FILE, buffer.getvalue())
    write_bytes(path / CONFIG_FILE, (json.dumps(config, indent=2) + "\n").encode())
    return path


def _relative(model_path: str | None, folder: Path) -> str | None:
    """``model_path`` relative to the save folder, so that moving both together keeps working."""
    if model_path is None:
        return None
    return os.path.relpath(Path(model_path).resolve(), folder.resolve())


def _recorded_paths(config: dict, folder: Path) -> list[str | None]:
    """The model files recorded at save time: relative to ``folder`` if that file exists, else
    the absolute path recorded beside it."""
    absolute = config.get("model_paths_absolute") or [None] * len(config["model_paths"])
    paths = []
    for relative, fallback in zip(config["model_paths"], absolute):
        candidate = None if relative is None else folder / relative
        paths.append(str(candidate) if candidate and candidate.is_file() else fallback)
    return paths


#: Keys every uncertainty.json written by :func:`save` holds.
CONFIG_KEYS = ("kind", "options", "model_paths", "models", "fingerprints")


def _read_config(file: Path) -> dict:
    """The JSON object of an uncertainty.json; ValueError naming the file if it is not JSON, not
    an object, or lacks one of :data:`CONFIG_KEYS` (a damaged or hand-edited file)."""
    again = "save the model again (uq_bias.uncertainty.save or `uq-bias calibrate`)"
    try:
        config = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{str(file)!r} is not valid JSON ({err}); {again}") from err
    if not isinstance(config, dict):
        raise ValueError(
            f"{str(file)!r} holds a JSON {type(config).__name__}, not an object; {again}"
        )
    if config.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{str(file)!r} has format version {config.get('format_version')}, this "
            f"uq_bias reads version {FORMAT_VERSION}"
        )
    missing = [key for key in CONFIG_KEYS if key not in config]
    if missing:
        raise ValueError(f"{str(file)!r} lacks the key(s) {missing}; {again}")
    return config


def _read(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    files = [path / CONFIG_FILE, path / STATE_FILE]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{str(path)!r} is not a saved uncertainty model: missing {missing} (write one with "
            "uq_bias.uncertainty.save(model, path) or `uq-bias calibrate`)"
        )
    config = _read_config(files[0])
    data = files[1].read_bytes()
    expected = config.get("state_sha256")  # absent in folders saved before it was recorded
    if expected is not None and hashlib.sha256(data).hexdigest() != expected:
        raise ValueError(
            f"{str(files[1])!r} is not the state {str(files[0])!r} was saved with (a save "
            "interrupted between the two files, or files copied from two saves); save the "
            "model again"
        )
    try:
        return config, torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # pickle.UnpicklingError, RuntimeError, EOFError from a bad file
        raise ValueError(
            f"{str(files[1])!r} is not a readable state file ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); save the model again"
        ) from err


def _adapters(config: dict, model, path: Path) -> list[AtomisticModel]:
    """The wrapped model(s): from ``model`` if given, else from the recorded file paths."""
    if model is None:
        paths = _recorded_paths(config, path)
        if any(p is None for p in paths):
            raise ValueError(
                f"the state in {str(path)!r} does not record the model file(s); pass them: "
                "uq_bias.uncertainty.load(path, model=...)"
            )
        model = paths
    given = list(model) if isinstance(model, (list, tuple)) else [model]
    adapters = [m if isinstance(m, AtomisticModel) else load_model(m) for m in given]
    if len(adapters) != len(config["fingerprints"]):
        raise ValueError(
            f"the state in {str(path)!r} was saved for {len(config['fingerprints'])} model(s), "
            f"got {len(adapters)}"
        )
    for k, (adapter, expected, summary) in enumerate(
        zip(adapters, config["fingerprints"], config["models"])
    ):
        if model_fingerprint(adapter) != expected:
            now = model_summary(adapter)
            diff = [
                f"{key}: saved {summary[key]}, given {now.get(key)}"
                for key in summary
                if summary[key] != now.get(key)
            ] or ["weights: same shapes but other values (weights checksum differs)"]
            raise ValueError(
                f"the uncertainty state in {str(path)!r} was fitted for another model: model {k} "
                f"differs in {'; '.join(diff)}. Fit and calibrate again for this model, or pass "
                "the model the state was saved for"
            )
    return adapters


#: Tensors added since format version 1 was written: a state saved before them loads with the
#: unfitted value (the stress calibration factor: 1, i.e. the raw ensemble spread).
ADDED_KEYS = frozenset({"calibration.stress"})


def _set_state(model: UncertaintyModel, state: dict[str, torch.Tensor]) -> None:
    """Put the saved tensors in place (shapes may differ from the unfitted buffers)."""
    expected = set(_own_state(model))
    if not set(state) <= expected or not (expected - set(state)) <= ADDED_KEYS:
        raise ValueError(
            f"saved state keys {sorted(set(state) ^ expected)} do not match this uq_bias version"
        )
    device = next(model.parameters()).device
    for key, value in state.items():
        owner, _, name = key.rpartition(".")
        module = model.get_submodule(owner) if owner else model
        if name in module._parameters:
            module._parameters[name] = torch.nn.Parameter(value.to(device), requires_grad=False)
        else:
            setattr(module, name, value.to(device))


def load(
    path: str | Path,
    model: AtomisticModel | torch.nn.Module | str | Path | Sequence | None = None,
    *,
    device: str | torch.device | None = None,
) -> UncertaintyModel:
    """Load a saved uncertainty model from the folder ``path``.

    ``model`` is the wrapped model (an adapter, module or file) or, for an ensemble, the list of
    members; by default the model file path(s) recorded at save time (trusted pickles).
    ``device``: "auto" (a GPU if this process sees one), "cpu", "cuda", "cuda:<k>", or None
    (where the model files load: the CPU). Raises ValueError when ``model`` is not the one the
    state was fitted for, or for a device this process cannot use.
    """
    from uq_bias.device import resolve_device

    path = Path(path)
    config, state = _read(path)
    if config["kind"] not in REGISTRY:
        raise ValueError(
            f"unknown uncertainty kind {config['kind']!r} in {str(path)!r}; known: "
            f"{sorted(REGISTRY)} (import the module that defines it first)"
        )
    adapters = _adapters(config, model, path)
    result = REGISTRY[config["kind"]].rebuild(adapters, config["options"])
    result.wrapped_paths = (
        _recorded_paths(config, path) if model is None else [None] * len(adapters)
    )
    _set_state(result, state)
    target = resolve_device(device)
    return result if target is None else result.to(target)
