"""Generic adapter on a small user module (a radial-basis atom-energy network)."""

from __future__ import annotations

import pytest
import torch

from uq_bias import GenericAdapter, testing
from uq_bias.graph import edge_vectors


class RadialNet(torch.nn.Module):
    """E_i = readout(tanh(W g_i)), g_i = sum_j exp(-(r_ij - mu)^2) * f_cut(r_ij) per species."""

    def __init__(self, cutoff: float = 4.0, width: int = 8):
        super().__init__()
        self.cutoff = cutoff
        self.register_buffer("mu", torch.linspace(0.8, cutoff, 6, dtype=torch.float64))
        self.embed = torch.nn.Embedding(100, 6, dtype=torch.float64)
        self.hidden = torch.nn.Linear(6, width, dtype=torch.float64)
        self.readout = torch.nn.Linear(width, 1, dtype=torch.float64)

    def forward(self, graph):
        lengths = edge_vectors(graph).norm(dim=1)
        cut = 0.5 * (torch.cos(torch.pi * lengths / self.cutoff) + 1)
        basis = torch.exp(-((lengths[:, None] - self.mu) ** 2)) * cut[:, None]
        density = torch.zeros(graph.n_atoms, 6, dtype=basis.dtype)
        density = density.index_add(0, graph.edge_index[1], basis)
        hidden = torch.tanh(self.hidden(density * self.embed(graph.atomic_numbers)))
        return self.readout(hidden).squeeze(-1)


def test_generic_contract(methanol, cu_cell):
    adapter = GenericAdapter(RadialNet(), "readout", cutoff=4.0, atomic_numbers=[1, 6, 8, 13, 29])
    testing.check_adapter(adapter, methanol, cu_cell)


def test_unknown_layer_lists_linear_layers():
    with pytest.raises(ValueError, match=r"no submodule 'head'.*\['hidden', 'readout'\]"):
        GenericAdapter(RadialNet(), "head", cutoff=4.0, atomic_numbers=[29])


def test_layer_with_several_outputs_is_rejected():
    with pytest.raises(ValueError, match="out_features=1"):
        GenericAdapter(RadialNet(), "hidden", cutoff=4.0, atomic_numbers=[29])


# A user's module that breaks the contract in one way each. Before these checks, the first four
# gave silently wrong numbers (zero forces, zero stress, wrong last-layer features).


class DetachedNet(RadialNet):
    """Distances detached from the positions: the energy depends on them only numerically."""

    def forward(self, graph):
        return super().forward(_detached(graph))


def _detached(graph):
    from dataclasses import replace

    return replace(graph, positions=graph.positions.detach(), strain=graph.strain.detach())


class NoStrainNet(RadialNet):
    """Edge vectors from positions and unit shifts times the cell, without the graph's strain."""

    def forward(self, graph):
        sender, receiver = graph.edge_index
        shifts = torch.einsum("ei,eij->ej", graph.unit_shifts, graph.cell[graph.batch[sender]])
        lengths = (graph.positions[receiver] - graph.positions[sender] + shifts).norm(dim=1)
        energy = torch.zeros(graph.n_atoms, dtype=lengths.dtype).index_add(
            0, receiver, torch.exp(-lengths)
        )
        return self.readout(energy[:, None].expand(-1, self.readout.in_features)).squeeze(-1)


class TwiceNet(RadialNet):
    """E_i = readout(h_i) + readout(2 h_i): the last layer is called twice."""

    def forward(self, graph):
        hidden = torch.tanh(self.hidden(self.embed(graph.atomic_numbers)))
        lengths = edge_vectors(graph).norm(dim=1)
        radial = torch.zeros(graph.n_atoms, dtype=lengths.dtype).index_add(
            0, graph.edge_index[1], torch.exp(-lengths)
        )
        return (self.readout(hidden) + self.readout(2 * hidden)).squeeze(-1) * radial


class EdgeReadoutNet(RadialNet):
    """The readout applied per edge, then summed onto the receiving atoms."""

    def forward(self, graph):
        lengths = edge_vectors(graph).norm(dim=1)
        per_edge = self.readout(torch.exp(-lengths)[:, None].expand(-1, 8)).squeeze(-1)
        return torch.zeros(graph.n_atoms, dtype=lengths.dtype).index_add(
            0, graph.edge_index[1], per_edge
        )


class DictNet(RadialNet):
    def forward(self, graph):
        return {"energy": super().forward(graph)}


ELEMENTS = [1, 6, 8, 13, 29]


def _wrap(module, cutoff=4.0):
    return GenericAdapter(module, "readout", cutoff=cutoff, atomic_numbers=ELEMENTS)


def test_an_energy_detached_from_positions_is_refused_not_zero_forces(methanol):
    from uq_bias import Calculator

    atoms = methanol.copy()
    atoms.calc = Calculator(_wrap(DetachedNet()))
    with pytest.raises(ValueError, match="does not depend on the graph's positions"):
        atoms.get_forces()


def test_an_energy_blind_to_strain_is_refused_not_zero_stress(cu_cell):
    """NoStrainNet's forces are right (the positions enter); its stress came out exactly 0."""
    from uq_bias import Calculator
    from uq_bias.models.base import energy_gradients

    adapter = _wrap(NoStrainNet())
    graph = adapter.graph(cu_cell).requires_grad_(positions=True, strain=True)
    forces, _ = energy_gradients(adapter(graph).energy, graph)
    assert forces.abs().max() > 0
    atoms = cu_cell.copy()
    atoms.calc = Calculator(adapter)
    with pytest.raises(ValueError, match="does not depend on the graph's strain"):
        atoms.get_stress()


def test_isolated_atoms_keep_exactly_zero_forces():
    """No neighbour within the cutoff: the energy cannot depend on the positions, and the force
    is exactly 0 (closed form), not an error."""
    from ase import Atoms

    from uq_bias import Calculator

    atoms = Atoms("CO", positions=[[0, 0, 0], [9, 0, 0]])
    atoms.calc = Calculator(_wrap(RadialNet()))
    assert (atoms.get_forces() == 0).all()


@pytest.mark.parametrize(
    "module, match",
    [
        (TwiceNet(), "called 2 times"),
        (EdgeReadoutNet(), r"one row per atom, \(6, 8\)"),
        (DictNet(), "returned a dict"),
    ],
    ids=["called-twice", "per-edge", "dict"],
)
def test_last_layer_misuse_is_named(methanol, module, match):
    adapter = _wrap(module)
    with pytest.raises((ValueError, TypeError), match=match):
        adapter(adapter.graph(methanol), features=True)


def test_a_layer_that_is_never_called_is_named(methanol):
    net = RadialNet()
    net.unused = torch.nn.Linear(8, 1, dtype=torch.float64)
    adapter = GenericAdapter(net, "unused", cutoff=4.0, atomic_numbers=ELEMENTS)
    with pytest.raises(ValueError, match="'unused' was called 0 times"):
        adapter(adapter.graph(methanol), features=True)


def test_a_graph_not_built_for_the_model_is_refused(cu_cell):
    from uq_bias.graph import atoms_to_graph

    adapter = _wrap(RadialNet(cutoff=3.0), cutoff=3.0)
    with pytest.raises(ValueError, match="cutoff 5.0 A, the model has 3.0 A"):
        adapter(atoms_to_graph(cu_cell, 5.0))
    single = atoms_to_graph(cu_cell, 3.0, dtype=torch.float32)
    with pytest.raises(ValueError, match="graph is torch.float32 and the model torch.float64"):
        adapter(single)


def test_a_module_of_mixed_dtypes_is_refused():
    net = RadialNet()
    net.embed = torch.nn.Embedding(100, 6, dtype=torch.float32)
    with pytest.raises(ValueError, match="mix"):
        _wrap(net)


@pytest.mark.parametrize(
    "cutoff, numbers, match",
    [
        (None, ELEMENTS, "cutoff must be a finite number of A > 0, got None"),
        (-1.0, ELEMENTS, "cutoff must be"),
        (0, ELEMENTS, "cutoff must be"),
        (4.0, "168", "sequence of integers"),
        (4.0, 6, "sequence of integers"),
        (4.0, ["C"], r"integers from 1 to 118 \(H to Og\), got \['C'\]"),
        (4.0, [0, 200], "integers from 1 to 118"),
        (4.0, [], "integers from 1 to 118"),
    ],
)
def test_constructor_arguments_are_checked(cutoff, numbers, match):
    with pytest.raises(ValueError, match=match):
        GenericAdapter(RadialNet(), "readout", cutoff=cutoff, atomic_numbers=numbers)


def test_an_ensemble_of_one_model_twice_is_refused(tmp_path):
    """The same object twice, or the same file twice: zero spread, so zero uncertainty."""
    from uq_bias.uncertainty import Ensemble

    adapter, other = _wrap(RadialNet()), _wrap(RadialNet())
    torch.save(adapter, tmp_path / "a.model")
    for members in ([adapter, adapter], [tmp_path / "a.model", other, tmp_path / "a.model"]):
        with pytest.raises(ValueError, match="members 0 and [12] have identical weights"):
            Ensemble(members)
    assert Ensemble([adapter, other]).n_members == 2


def test_load_model_names_a_device_it_cannot_use():
    from uq_bias import load_model

    with pytest.raises(ValueError, match="device: 'gpu' is not one of"):
        load_model(_wrap(RadialNet()), device="gpu")


def test_atomic_numbers_may_be_numpy_or_torch_integers():
    """As a MACE model stores them (a tensor): integers, not refused as 'not integers'."""
    import numpy as np

    for numbers in (torch.tensor([8, 1, 6]), np.array([8, 1, 6])):
        adapter = GenericAdapter(RadialNet(), "readout", cutoff=4.0, atomic_numbers=numbers)
        assert adapter.atomic_numbers == (1, 6, 8)
