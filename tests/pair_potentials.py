"""A Morse pair potential twice: ASE's ``MorsePotential`` (numpy, with vesin's neighbour list so
that it is fast) and the same energy as a torch module behind the generic adapter, so that the
batched engine and ASE's integrators can run the same model on the same system."""

from __future__ import annotations

import torch
from ase.calculators.morse import MorsePotential

from uq_bias import GenericAdapter
from uq_bias.graph import edge_vectors

#: Cu-like Morse, Lennard-Jones-like stiffness (eV, 1, A; ASE's smooth quintic cutoff from
#: 1.45 r0 = 3.70 A to 1.65 r0 = 4.21 A, between the second and third fcc shells): fcc with
#: a = 3.57 A at 0 K and about 3.585 A at 300 K and 0 GPa, bulk modulus about 260 GPa at 300 K.
#: (A longer cutoff through the outer shells gave crystals that change phase under a full-cell
#: barostat, or several basins: no place to compare volume distributions.)
MORSE = {"epsilon": 0.4, "rho0": 6.0, "r0": 2.55, "rcut1": 1.45, "rcut2": 1.65}


class TorchMorse(torch.nn.Module):
    """ASE's Morse energy: E_i = (1/2) sum_j eps e_ij (e_ij - 2) f(r_ij), e = exp(rho0 (1 - r /
    r0)), f the quintic smoothstep from r0 * rcut1 to r0 * rcut2, read out by a one-weight
    linear layer (weight 1) so that the generic adapter has a last layer."""

    def __init__(self, epsilon, rho0, r0, rcut1, rcut2):
        super().__init__()
        self.epsilon, self.rho0, self.r0 = epsilon, rho0, r0
        self.inner, self.outer = rcut1 * r0, rcut2 * r0
        self.readout = torch.nn.Linear(1, 1, bias=False, dtype=torch.float64)
        with torch.no_grad():
            self.readout.weight.fill_(1.0)

    def forward(self, graph):
        r = edge_vectors(graph).norm(dim=1)
        e = torch.exp(self.rho0 * (1 - r / self.r0))
        s = (1 - (r - self.inner) / (self.outer - self.inner)).clamp(0, 1)
        pair = 0.5 * self.epsilon * e * (e - 2) * (6 * s**5 - 15 * s**4 + 10 * s**3)
        atom = r.new_zeros(graph.n_atoms, 1).index_add(0, graph.edge_index[1], pair[:, None])
        return self.readout(atom).squeeze(-1)


def morse_adapter() -> GenericAdapter:
    cutoff = MORSE["rcut2"] * MORSE["r0"]
    return GenericAdapter(TorchMorse(**MORSE), "readout", cutoff=cutoff, atomic_numbers=[29])


def _vesin_neighbor_list(quantities, atoms, cutoff):
    from vesin import NeighborList

    return NeighborList(cutoff=cutoff, full_list=True).compute(
        points=atoms.positions, box=atoms.cell.array, periodic=True, quantities=quantities
    )


def ase_morse() -> MorsePotential:
    return MorsePotential(neighbor_list=_vesin_neighbor_list, **MORSE)
