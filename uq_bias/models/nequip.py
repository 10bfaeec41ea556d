"""NequIP adapter: per-atom energies and the exact last-layer features of a nequip-framework model.

A NequIP GNN model of the current nequip framework (tested with nequip 0.19:
``GraphModel -> ForceStressOutput -> SequentialGraphNetwork``) ends in a per-atom energy readout
and a per-type scale and shift:

    y_i = alpha * h_i . w (+ b)              (the readout's last ``ScalarLinearLayer``)
    E_i = s[t_i] * y_i + c[t_i] + (pair potential terms, independent of w)

with h_i the input of that layer (for a bias-free deep *linear* readout, h_i = x_i W_1 ... W_{n-1}),
alpha its fixed normalisation and s, c the per-type scales and shifts (t_i the type of atom i).
The last layer is w (and b, if present), so

    phi_i = dE_i/dw = s[t_i] * alpha * h_i    (and s[t_i] for b).

Forces and stress are not taken from nequip's ``ForceStressOutput``: the adapter calls the inner
energy model with edge vectors built from the strained graph (:func:`uq_bias.graph.strained`), so
autograd through ``graph.positions`` and ``graph.strain`` gives them, as for every adapter.
Other nequip-framework architectures (e.g. Allegro, whose energies come from edges) are refused
with a message, not wrapped approximately.

nequip needs e3nn>=0.6 and mace-torch pins e3nn==0.4.4: install ``uq_bias[nequip]`` in an
environment of its own (see the README).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ase.data import atomic_numbers as symbol_to_number

from uq_bias.graph import Graph, strained
from uq_bias.models.base import AtomisticModel, ModelOutput

# nequip's AtomicDataDict keys (nequip/data/_keys.py), spelled out so that this module imports
# without nequip.
POSITIONS = "pos"
EDGE_INDEX = "edge_index"
EDGE_CELL_SHIFT = "edge_cell_shift"
EDGE_VECTORS = "edge_vectors"
CELL = "cell"
BATCH = "batch"
NUM_NODES = "num_atoms"
ATOM_TYPE = "atom_types"
PER_ATOM_ENERGY = "atomic_energy"
NORM_LENGTH = "normed_edge_lengths"

#: Modules that may follow the readout: they scale it per type, add a w-independent term to the
#: per-atom energy, or sum it.
_AFTER_READOUT = {
    "PerTypeScaleShift",
    "AtomwiseReduce",
    "ZBL",
    "LennardJones",
    "SimpleLennardJones",
}
_FORCE_WRAPPERS = {"ForceStressOutput", "PartialForceOutput"}
_SOLE_MODEL_KEY = "sole_model"


def import_nequip():
    """Import nequip lazily, with a clear message when the extra is missing."""
    try:
        import nequip  # noqa: F401
    except ImportError as err:
        raise ImportError(
            "NequIP models need the nequip package, which cannot share an environment with "
            "mace-torch (e3nn>=0.6 against e3nn==0.4.4): install it in a separate environment "
            "with `pip install uq_bias[nequip]` (see the README)"
        ) from err
    return nequip


@contextlib.contextmanager
def nequip_global_state():
    """nequip's global state (``set_global_state``, float64 as torch's default dtype), which
    nequip needs to build or load models and to convert data, for the duration of the block.
    The caller's default dtype and torch, numpy and random RNG states are restored afterwards."""
    from nequip.utils.global_dtype import _GLOBAL_DTYPE
    from nequip.utils.global_state import set_global_state

    dtype = torch.get_default_dtype()
    torch_rng = torch.random.get_rng_state()
    numpy_rng = np.random.get_state()
    python_rng = random.getstate()
    try:
        set_global_state(allow_tf32=False)
        torch.set_default_dtype(_GLOBAL_DTYPE)  # set_global_state sets it only the first time
        yield
    finally:
        torch.set_default_dtype(dtype)
        torch.random.set_rng_state(torch_rng)
        np.random.set_state(numpy_rng)
        random.setstate(python_rng)


def is_nequip_file(path: str | Path) -> bool:
    """True for a nequip package (``*.nequip.zip``) or a nequip training checkpoint (``*.ckpt``
    whose hyper-parameters record the nequip version). Does not import nequip; a checkpoint is
    sniffed with ``weights_only=True``, which runs no code from the file."""
    path = Path(path)
    if path.name.endswith(".nequip.zip"):
        return True
    if path.suffix != ".ckpt" or not path.is_file():
        return False
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        versions = checkpoint["hyper_parameters"]["info_dict"]["versions"]
    except Exception:
        return False
    return isinstance(versions, Mapping) and "nequip" in versions


def read_nequip_file(path: str | Path) -> torch.nn.Module:
    """Load a nequip package (``.nequip.zip``) or checkpoint (``.ckpt``) as an eager GraphModel.

    Compiled models (``nequip-compile`` output) cannot be wrapped: they hide the readout weights.
    Raises FileNotFoundError for a missing file, ImportError when nequip is not installed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"nequip model file {str(path)!r} does not exist")
    import_nequip()
    from nequip.model.saved_models import load_saved_model

    with nequip_global_state():
        return load_saved_model(str(path), compile_mode="eager")


def is_nequip_module(module: torch.nn.Module) -> bool:
    """True for a nequip ``GraphModel`` (also from a package) or a ModuleDict holding one."""
    if isinstance(module, torch.nn.ModuleDict) and _SOLE_MODEL_KEY in module:
        module = module[_SOLE_MODEL_KEY]
    return bool(getattr(module, "is_graph_model", False))


def _energy_model(model: torch.nn.Module) -> torch.nn.Sequential:
    """The SequentialGraphNetwork inside GraphModel -> ForceStressOutput."""
    inner = model.model
    while type(inner).__name__ in _FORCE_WRAPPERS:
        inner = inner.func
    if not isinstance(inner, torch.nn.Sequential):
        raise ValueError(
            f"expected a nequip GraphModel wrapping a SequentialGraphNetwork, found "
            f"{type(inner).__name__}; only NequIP-style models (NequIPGNNModel) are supported"
        )
    return inner


def _edge_type_pruner(energy_model: torch.nn.Sequential) -> torch.nn.Module | None:
    """The model's EdgeLengthNormalizer when it has per-edge-type cutoffs (edges with a
    normalised length r / r_cut[t_s, t_r] above 1 are not neighbours), else None."""
    for module in energy_model:
        if type(module).__name__ == "EdgeLengthNormalizer" and module._per_edge_type:
            return module
    return None


def _readout_index(energy_model: torch.nn.Sequential) -> int:
    """Position of the (unique) module writing the per-atom energy from node features."""
    found = [
        k
        for k, module in enumerate(energy_model)
        if getattr(module, "out_field", None) == PER_ATOM_ENERGY and hasattr(module, "mlp_module")
    ]
    if len(found) != 1:
        names = [type(m).__name__ for m in energy_model]
        raise ValueError(
            f"expected exactly one per-atom energy readout (a ScalarMLP writing "
            f"{PER_ATOM_ENERGY!r}) in the nequip model, found {len(found)} among {names}"
        )
    return found[0]


def _check_after_readout(modules: list[torch.nn.Module]) -> list[torch.nn.Module]:
    """The PerTypeScaleShift modules after the readout; raise for anything not known to keep
    E_i affine in the readout with slope s[t_i]."""
    scale_shifts = []
    for module in modules:
        name = type(module).__name__
        if name not in _AFTER_READOUT:
            raise ValueError(
                f"module {name} after the per-atom energy readout is not supported: the NequIP "
                f"adapter knows {sorted(_AFTER_READOUT)}"
            )
        if name == "AtomwiseReduce" and (module.reduce != "sum" or module.constant != 1.0):
            raise ValueError("the nequip model's energy reduction is not a plain sum")
        if name == "PerTypeScaleShift" and module.field == PER_ATOM_ENERGY:
            scale_shifts.append(module)
    return scale_shifts


def _type_index(type_names: list[str], species_to_type: Mapping[str, str] | None) -> torch.Tensor:
    """(119,) int64: atomic number -> model type index (-1 for elements the model lacks)."""
    if species_to_type is None:
        unknown = [name for name in type_names if name not in symbol_to_number]
        if unknown:
            raise ValueError(
                f"the nequip model's type names {type_names} are not all chemical symbols "
                f"({unknown}); pass species_to_type={{'H': 'H_type', ...}} to NequIPAdapter"
            )
        species_to_type = {name: name for name in type_names}
    index = torch.full((119,), -1, dtype=torch.int64)
    for symbol, type_name in species_to_type.items():
        if symbol not in symbol_to_number or type_name not in type_names:
            raise ValueError(
                f"species_to_type: {symbol!r} -> {type_name!r} needs a chemical symbol and one "
                f"of the model's type names {type_names}"
            )
        index[symbol_to_number[symbol]] = type_names.index(type_name)
    return index


@dataclass(frozen=True)
class _Readout:
    """The readout MLP of the per-atom energy and its last layer (kept unregistered)."""

    mlp: torch.nn.Module  # nequip ScalarMLPFunction.mlp: a Sequential or a DeepLinearMLP
    deep_linear: bool  # y = alpha * x W_1 ... W_n (no bias, no nonlinearity)

    @property
    def last(self) -> torch.nn.Module:
        return self.mlp if self.deep_linear else self.mlp[-1]

    def parameters(self) -> list[torch.nn.Parameter]:
        if self.deep_linear:
            return [self.mlp.weights[-1]]
        bias = [self.last.bias] if self.last.bias is not None else []
        return [self.last.weight] + bias

    def inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(h, alpha) from the input x captured at :attr:`last`: y = alpha * h . w (+ b)."""
        if not self.deep_linear:
            return x, self.last.alpha
        for weight in list(self.mlp.weights)[:-1]:
            x = x @ weight
        return x, self.mlp.alpha


def _readout(mlp: torch.nn.Module) -> _Readout:
    readout = _Readout(mlp, type(mlp).__name__ == "DeepLinearMLP")
    if torch.nn.utils.parametrize.is_parametrized(readout.last):
        raise ValueError("parametrized (weight/spectral norm) readouts are not supported")
    if readout.parameters()[0].shape[-1] != 1:
        raise ValueError("the per-atom energy readout must have one output")
    return readout


class NequIPAdapter(AtomisticModel):
    """A nequip-framework NequIP model as an :class:`AtomisticModel`.

    Args:
        model: a nequip ``GraphModel`` (built in Python, or loaded from a checkpoint or a
            ``.nequip.zip`` package), or a ModuleDict holding one under ``"sole_model"``.
        species_to_type: chemical symbol -> model type name, when the type names are not
            chemical symbols.

    The last-layer weights are made to require grad (needed for :meth:`last_layer_gradient`).
    """

    def __init__(self, model: torch.nn.Module, species_to_type: Mapping[str, str] | None = None):
        super().__init__()
        if not is_nequip_module(model):
            raise TypeError(f"NequIPAdapter needs a nequip GraphModel, got {type(model).__name__}")
        if isinstance(model, torch.nn.ModuleDict):
            model = model[_SOLE_MODEL_KEY]
        metadata = model.metadata
        if "type_names" not in metadata or "r_max" not in metadata:
            raise ValueError(
                "the nequip GraphModel has no type_names/r_max metadata; build it with a nequip "
                "model builder (e.g. nequip.model.NequIPGNNModel) or load a saved model"
            )
        self.model = model
        energy_model = _energy_model(model)
        self._energy_model = (energy_model,)  # a tuple: not registered twice as a submodule
        pruner = _edge_type_pruner(energy_model)
        self._pruners = () if pruner is None else (pruner,)  # a tuple: not registered twice
        self.type_names = list(metadata["type_names"].split(" "))
        self.cutoff = float(metadata["r_max"])
        index = _type_index(self.type_names, species_to_type)
        self.atomic_numbers = tuple(int(z) for z in torch.nonzero(index >= 0).flatten())
        self.register_buffer("_type_index", index, persistent=False)
        position = _readout_index(energy_model)
        modules = list(energy_model)
        self._scale_shifts = tuple(_check_after_readout(modules[position + 1 :]))
        self._readout = _readout(modules[position].mlp_module.mlp)
        for parameter in self._readout.parameters():
            parameter.requires_grad_(True)

    def to(self, *args, **kwargs):
        """Move to a device; a nequip model's dtype is fixed when it is built (``model_dtype``)."""
        _, dtype, *_ = torch._C._nn._parse_to(*args, **kwargs)
        if dtype is not None and dtype != self.dtype:
            raise ValueError(
                f"cannot convert a nequip model from {self.dtype} to {dtype}: its dtype is fixed "
                "when it is built (nequip's model_dtype); build or train it in the dtype you need"
            )
        return super().to(*args, **kwargs)

    @property
    def n_features(self) -> int:
        weight, *bias = self._readout.parameters()
        return weight.shape[0] + len(bias)

    def _data(self, graph: Graph) -> dict[str, torch.Tensor]:
        types = self._type_index[graph.atomic_numbers]
        if (types < 0).any():
            unknown = sorted(set(graph.atomic_numbers[types < 0].tolist()))
            raise ValueError(f"elements {unknown} unknown to the model ({self.atomic_numbers})")
        positions, cell, shifts = strained(graph)
        sender, receiver = graph.edge_index
        data = {
            POSITIONS: positions,
            EDGE_INDEX: graph.edge_index,
            EDGE_CELL_SHIFT: graph.unit_shifts,
            EDGE_VECTORS: positions[receiver] - positions[sender] + shifts,
            CELL: cell,
            BATCH: graph.batch,
            NUM_NODES: graph.ptr[1:] - graph.ptr[:-1],
            ATOM_TYPE: types,
        }
        for pruner in self._pruners:  # drop edges beyond their per-edge-type cutoff, as nequip
            with torch.no_grad():
                keep = pruner(dict(data))[NORM_LENGTH].reshape(-1) <= 1.0
            data[EDGE_INDEX] = graph.edge_index[:, keep]
            data[EDGE_CELL_SHIFT] = graph.unit_shifts[keep]
            data[EDGE_VECTORS] = data[EDGE_VECTORS][keep]
        return data

    def _scale(self, types: torch.Tensor) -> torch.Tensor:
        """(n_atoms, 1) s[t_i], the product of the per-type scales after the readout."""
        scale = torch.ones((types.shape[0], 1), dtype=torch.float64, device=types.device)
        for module in self._scale_shifts:
            if module.has_scales:
                scales = module.scales.reshape(-1, 1)
                scale = scale * (scales if scales.numel() == 1 else scales[types])
        return scale

    def forward(self, graph: Graph, features: bool = False) -> ModelOutput:
        data = self._data(graph)
        captured: list[torch.Tensor] = []
        handle = None
        if features:
            handle = self._readout.last.register_forward_pre_hook(
                lambda module, args: captured.append(args[0])
            )
        try:
            out = self._energy_model[0](data)
        finally:
            if handle is not None:
                handle.remove()
        dtype = graph.positions.dtype
        node_energy = out[PER_ATOM_ENERGY].reshape(-1).to(dtype)
        energy = torch.zeros(graph.n_structures, dtype=dtype, device=node_energy.device)
        energy = energy.index_add(0, graph.batch, node_energy)
        phi = self._features(captured[0], data[ATOM_TYPE]).to(dtype) if features else None
        return ModelOutput(energy=energy, node_energy=node_energy, features=phi)

    def _features(self, x: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        """(n_atoms, P) phi_i = s[t_i] * alpha * h_i (and s[t_i] for a bias)."""
        h, alpha = self._readout.inputs(x)
        scale = self._scale(types)
        phi = scale * (alpha * h)
        if len(self._readout.parameters()) == 2:
            phi = torch.cat([phi, scale.to(phi.dtype)], dim=1)
        return phi

    def last_layer_parameters(self) -> list[torch.nn.Parameter]:
        return self._readout.parameters()

    def last_layer_gradient(self, energy: torch.Tensor) -> torch.Tensor:
        grads = torch.autograd.grad(energy, self.last_layer_parameters(), retain_graph=True)
        return torch.cat([g.reshape(-1) for g in grads])
