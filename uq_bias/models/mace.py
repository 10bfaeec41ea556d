"""MACE adapter: per-atom energies and the exact last-layer features of a MACE model.

The last layer w is the set of readout weights that produce energies for the selected head h:
the 0e -> 0e weight of every ``LinearReadoutBlock.linear`` and of the
``NonLinearReadoutBlock.linear_2``. e3nn's Linear computes y = alpha * x W with the path weight
alpha = 1/sqrt(fan_in), and ScaleShiftMACE multiplies the readout sum by scale[h], so

    phi_i = scale[h] * [ alpha_1 x_{1,i}[:n0], ..., alpha_L a_i[block h] ]

where x_{l,i}[:n0] are the scalar node features entering linear readout l and a_i the activated
hidden layer entering the last (non-linear) readout, restricted to head h's block of width M.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from uq_bias.graph import Graph, strained
from uq_bias.models.base import AtomisticModel, ModelOutput


def import_mace():
    """Import mace lazily, with a clear message when the extra is missing."""
    try:
        import mace.modules  # noqa: F401  (must come before e3nn, see DESIGN.md)
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "MACE models need mace-torch: install it with `pip install uq_bias[mace]`"
        ) from err
    return mace


@dataclass(frozen=True)
class _Readout:
    """One e3nn Linear whose 0e -> 0e weight is part of the last layer."""

    linear: torch.nn.Module
    in_slice: slice  # which input channels are the scalars / the head's hidden block
    rows: slice  # the same channels as rows of the instruction's weight block
    offset: int  # where the instruction's weights start in linear.weight
    mul_in: int  # rows of that weight block (all input scalars, every head's block)
    mul_out: int  # columns (one per head)
    alpha: float  # e3nn path weight 1/sqrt(fan_in)


def _scalar_instruction(linear: torch.nn.Module):
    """The instruction of an e3nn Linear that maps input scalars (0e) to output scalars."""
    offset = 0
    for ins in linear.instructions:
        ir_in = linear.irreps_in[ins.i_in].ir
        ir_out = linear.irreps_out[ins.i_out].ir
        if ir_in.l == 0 and ir_in.p == 1 and ir_out.l == 0 and ir_out.p == 1:
            return ins, offset
        offset += ins.path_shape[0] * ins.path_shape[1]
    raise ValueError(f"readout {linear} has no 0e -> 0e path")


def _readouts(model: torch.nn.Module, head: int, n_heads: int) -> list[_Readout]:
    readouts = []
    for block in model.readouts:
        nonlinear = hasattr(block, "linear_2")
        linear = block.linear_2 if nonlinear else block.linear
        ins, offset = _scalar_instruction(linear)
        mul_in, mul_out = ins.path_shape
        start = linear.irreps_in.slices()[ins.i_in].start
        if nonlinear and n_heads > 1:
            width = mul_in // n_heads
            in_slice = slice(start + head * width, start + (head + 1) * width)
        else:
            in_slice = slice(start, start + mul_in)
        rows = slice(in_slice.start - start, in_slice.stop - start)
        readouts.append(
            _Readout(linear, in_slice, rows, offset, mul_in, mul_out, float(ins.path_weight))
        )
    return readouts


def resolve_head(heads: list[str], head: str | int | None) -> int:
    """Index of ``head`` among ``heads``; None picks the only head or the one named 'default'."""
    if head is None:
        if len(heads) == 1:
            return 0
        named = [k for k, name in enumerate(heads) if name.lower() == "default"]
        if not named:
            raise ValueError(f"the model has several heads {heads}; choose one with head=...")
        return named[0]
    if isinstance(head, int):
        if not 0 <= head < len(heads):
            raise ValueError(f"head index {head} out of range for heads {heads}")
        return head
    if head not in heads:
        raise ValueError(f"unknown head {head!r}; the model has heads {heads}")
    return heads.index(head)


class MACEAdapter(AtomisticModel):
    """A MACE (or ScaleShiftMACE) model as an :class:`AtomisticModel`.

    Args:
        model: a mace-torch model (``mace.modules.MACE`` or ``ScaleShiftMACE``).
        head: the head to use for multi-head models (name or index); see :func:`resolve_head`.
    """

    def __init__(self, model: torch.nn.Module, head: str | int | None = None):
        super().__init__()
        import_mace()
        self.model = model
        self.heads = list(getattr(model, "heads", None) or ["default"])
        self.head = resolve_head(self.heads, head)
        self.cutoff = float(model.r_max)
        self.atomic_numbers = tuple(int(z) for z in model.atomic_numbers)
        index = torch.full((119,), -1, dtype=torch.int64)
        index[list(self.atomic_numbers)] = torch.arange(len(self.atomic_numbers))
        self.register_buffer("_species_index", index, persistent=False)
        self._readouts = _readouts(model, self.head, len(self.heads))

    @property
    def n_features(self) -> int:
        return sum(r.in_slice.stop - r.in_slice.start for r in self._readouts)

    def _scale(self) -> float:
        scale_shift = getattr(self.model, "scale_shift", None)
        if scale_shift is None:
            return 1.0
        return float(torch.atleast_1d(scale_shift.scale)[self.head])

    def _data(self, graph: Graph) -> dict[str, torch.Tensor]:
        positions, cell, shifts = strained(graph)
        species = self._species_index[graph.atomic_numbers]
        if (species < 0).any():
            unknown = sorted(set(graph.atomic_numbers[species < 0].tolist()))
            raise ValueError(f"elements {unknown} unknown to the model ({self.atomic_numbers})")
        one_hot = torch.nn.functional.one_hot(species, len(self.atomic_numbers))
        return {
            "positions": positions,
            "node_attrs": one_hot.to(graph.positions.dtype),
            "edge_index": graph.edge_index,
            "shifts": shifts,
            "unit_shifts": graph.unit_shifts,
            "cell": cell.reshape(-1, 3),
            "batch": graph.batch,
            "ptr": graph.ptr,
            "head": torch.full_like(graph.ptr[1:], self.head),
        }

    def forward(self, graph: Graph, features: bool = False) -> ModelOutput:
        captured: list[torch.Tensor] = []
        handles = []
        if features:
            for readout in self._readouts:
                hook = _capture(captured, readout)
                handles.append(readout.linear.register_forward_pre_hook(hook))
        try:
            out = self.model(self._data(graph), training=False, compute_force=False)
        finally:
            for handle in handles:
                handle.remove()
        energy = out["energy"]
        node_energy = out["node_energy"]  # ScaleShiftMACE: float64 (E0 added without rounding)
        phi = torch.cat(captured, dim=1) * self._scale() if features else None
        return ModelOutput(energy=energy, node_energy=node_energy, features=phi)

    def last_layer_parameters(self) -> list[torch.nn.Parameter]:
        return [r.linear.weight for r in self._readouts]

    def last_layer_gradient(self, energy: torch.Tensor) -> torch.Tensor:
        grads = torch.autograd.grad(energy, self.last_layer_parameters(), retain_graph=True)
        parts = []
        for readout, grad in zip(self._readouts, grads):
            block = grad.reshape(-1).narrow(0, readout.offset, readout.mul_in * readout.mul_out)
            parts.append(block.view(readout.mul_in, readout.mul_out)[readout.rows, self.head])
        return torch.cat(parts)

    def readout_gradients(self, graph: Graph) -> ReadoutGradients:
        """Energies, exact last-layer features and the hidden layer's gradient factors.

        For the non-linear readout y_i = linear_2(act(h_i)), h_i = alpha_1 x_i W_1, the gradient
        of the energy with respect to linear_1's 0e -> 0e weight is a sum of outer products,

            dE/dW_1[c, j] = sum_i (alpha_1 x_{i,c}) * g_{i,j},    g_i = dE/dh_i   (eV),

        restricted to head h's hidden block. g_i is taken by autograd from E to h only (cheap),
        with ``create_graph=True`` so that functions of g stay differentiable in the positions.
        """
        block = self.model.readouts[-1]
        if not hasattr(block, "linear_1"):
            raise ValueError("readout_gradients needs a MACE model with a non-linear last readout")
        ins, _ = _scalar_instruction(block.linear_1)
        start = block.linear_1.irreps_in.slices()[ins.i_in].start
        width = ins.path_shape[1] // len(self.heads)
        hidden = slice(self.head * width, (self.head + 1) * width)
        store: dict[str, torch.Tensor] = {}

        def pre_hook(module, args):
            store["x"] = args[0][:, start : start + ins.path_shape[0]] * float(ins.path_weight)

        def hook(module, args, output):
            store["h"] = output

        handles = [
            block.linear_1.register_forward_pre_hook(pre_hook),
            block.linear_1.register_forward_hook(hook),
        ]
        try:
            with torch.enable_grad():
                out = self.forward(graph, features=True)
                (grad_h,) = torch.autograd.grad(out.energy.sum(), store["h"], create_graph=True)
        finally:
            for handle in handles:
                handle.remove()
        return ReadoutGradients(out, store["x"], grad_h[:, hidden])


@dataclass
class ReadoutGradients:
    """What :meth:`MACEAdapter.readout_gradients` returns for a batch with N atoms.

    Attributes:
        output: energies and the exact last-layer features (N, P).
        inputs: (N, n0) alpha_1 x_i, the scaled scalars entering the hidden layer.
        grads: (N, H) g_i = dE/dh_i, the energy's gradient at the hidden pre-activation (eV).
    """

    output: ModelOutput
    inputs: torch.Tensor
    grads: torch.Tensor


def _capture(store: list[torch.Tensor], readout: _Readout):
    def hook(module, args):
        store.append(args[0][:, readout.in_slice] * readout.alpha)

    return hook
