"""Model adapters: one per model family, each an :class:`AtomisticModel`.

Model files are Python pickles: loading one can run arbitrary code. Load only files you trust.
"""

from __future__ import annotations

from pathlib import Path

import torch

from uq_bias.models.base import AtomisticModel, ModelOutput, energy_gradients
from uq_bias.models.generic import GenericAdapter

__all__ = [
    "AtomisticModel",
    "GenericAdapter",
    "ModelOutput",
    "energy_gradients",
    "load_model",
    "read_model_file",
]


def read_model_file(path: str | Path, map_location: str | torch.device = "cpu") -> torch.nn.Module:
    """Unpickle a torch model file (e.g. a MACE ``.model``). Only for files you trust.

    Raises FileNotFoundError for a missing file and ValueError for a file that is not a model.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(
            f"model file {str(path)!r} is a folder; give the model file itself (a folder written "
            "by `uq-bias calibrate` or uncertainty.save is an uncertainty model: use it with --unc "
            "or uq_bias.uncertainty.load)"
        )
    if not path.is_file():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist")
    try:  # a MACE file unpickles mace modules, and mace must be imported before e3nn
        from uq_bias.models.mace import import_mace

        import_mace()
    except ImportError:
        pass
    try:
        obj = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:
        raise ValueError(
            f"{str(path)!r} is not a torch model file ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(obj, torch.nn.Module):
        raise ValueError(
            f"{str(path)!r} holds a {type(obj).__name__}, not a torch.nn.Module; "
            "expected a saved model such as a MACE .model file"
        )
    return obj


def load_model(
    model: str | Path | torch.nn.Module,
    *,
    head: str | int | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
) -> AtomisticModel:
    """An adapter for a model file or module.

    Accepts an :class:`AtomisticModel` (returned as is, moved to ``dtype``/``device``), a MACE
    module or a path to a MACE model file, a nequip GraphModel or a nequip package
    (``.nequip.zip``) or checkpoint (``.ckpt``; needs the ``nequip`` extra). For any other
    module, wrap it in :class:`GenericAdapter` yourself and name its last linear layer.
    """
    from uq_bias.device import resolve_device
    from uq_bias.models import nequip  # no nequip import at module level; see models/nequip.py

    device = resolve_device(device)
    if isinstance(model, (str, Path)) and nequip.is_nequip_file(model):
        model = nequip.read_nequip_file(model)
    elif isinstance(model, (str, Path)):
        model = read_model_file(model, map_location=device or "cpu")
    if not isinstance(model, torch.nn.Module):
        raise TypeError(
            f"load_model: expected a path or a torch.nn.Module, got {type(model).__name__}"
        )
    if isinstance(model, AtomisticModel):
        adapter = model
    elif (
        hasattr(model, "readouts") and hasattr(model, "r_max") and hasattr(model, "atomic_numbers")
    ):
        from uq_bias.models.mace import MACEAdapter

        adapter = MACEAdapter(model, head=head)
    elif nequip.is_nequip_module(model):
        adapter = nequip.NequIPAdapter(model)
    else:
        raise ValueError(
            f"load_model does not know how to wrap a {type(model).__name__}; supported: MACE "
            "and NequIP models. Wrap other modules with "
            "uq_bias.models.GenericAdapter(module, last_layer=...)"
        )
    return adapter.to(device=device, dtype=dtype) if (dtype or device) else adapter
