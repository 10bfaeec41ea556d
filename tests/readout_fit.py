"""Test helper: fit the last layer (readout weights) of a MACE adapter by linear least squares.

E = w . Phi(S) + c with c independent of w (MACE's energy is linear in its readout weights), so
energies, forces and stresses are linear in w and the least-squares fit is exact linear algebra:

    minimise  sum_S |w.Phi_S + c_S - E_S|^2 / N_S + |w.dPhi_S/dr + F_S|^2
                    + a^2 |w.dPhi_S/deps/V - s_S|^2

This gives small, physically sensible models in seconds (Lightning training takes minutes on
shared CPUs), so that MD tests run on potentials that hold a crystal together.
"""

from __future__ import annotations

import torch


def _weight_blocks(adapter):
    """Views of the readout weights in the order of the adapter's features."""
    blocks = []
    for r in adapter._readouts:
        flat = r.linear.weight.reshape(-1)
        block = flat.narrow(0, r.offset, r.mul_in * r.mul_out).view(r.mul_in, r.mul_out)
        blocks.append((block, r.rows))
    return blocks


def _rows(adapter, atoms, w, stress_weight):
    graph = adapter.graph(atoms).requires_grad_(positions=True, strain=True)
    out = adapter(graph, features=True)
    phi = out.features.sum(0)  # (P,)
    c = out.energy[0] - phi.detach() @ w
    jac_r, jac_e = [], []
    for p in range(phi.shape[0]):
        g_r, g_e = torch.autograd.grad(phi[p], [graph.positions, graph.strain], retain_graph=True)
        jac_r.append(g_r.reshape(-1))
        jac_e.append(g_e.reshape(-1) / graph.volume[0])
    n = len(atoms)
    e_ref = atoms.get_potential_energy()
    f_ref = torch.as_tensor(atoms.get_forces()).reshape(-1)
    s_ref = torch.as_tensor(atoms.get_stress(voigt=False)).reshape(-1)
    a_rows = torch.cat(
        [
            phi.detach()[None] / n**0.5,
            -torch.stack(jac_r, 1),
            stress_weight * torch.stack(jac_e, 1),
        ]
    )
    b = torch.cat(
        [
            torch.tensor([(e_ref - float(c.detach())) / n**0.5]),
            f_ref,
            stress_weight * s_ref,
        ]
    )
    return a_rows, b.to(a_rows)


def fit_readout(adapter, frames, *, ridge: float = 1e-4, stress_weight: float = 10.0):
    """Set the adapter's readout weights to the ridge least-squares fit on labelled ``frames``."""
    blocks = _weight_blocks(adapter)
    head = adapter.head
    w = torch.cat([block[rows, head] for block, rows in blocks]).detach().clone()
    parts = [_rows(adapter, atoms, w, stress_weight) for atoms in frames]
    a = torch.cat([p[0] for p in parts])
    b = torch.cat([p[1] for p in parts])
    eye = torch.eye(a.shape[1], dtype=a.dtype)
    w_new = torch.linalg.solve(a.T @ a + ridge * eye, a.T @ b)
    start = 0
    with torch.no_grad():
        for block, rows in blocks:
            size = rows.stop - rows.start
            block[rows, head] = w_new[start : start + size]
            start += size
    return adapter
