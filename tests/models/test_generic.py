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
