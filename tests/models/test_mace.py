"""MACE adapter: exact last-layer features, derivatives, agreement with MACECalculator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from uq_bias import Calculator, load_model, testing
from uq_bias.models.mace import MACEAdapter
from uq_bias.training.build import build_mace


@pytest.fixture(scope="module")
def multihead_mace():
    model = build_mace([1, 6, 8, 13, 29], cutoff=4.0, heads=["pt_head", "default"], seed=1)
    with torch.no_grad():  # distinct per-head scales, so a wrong head index shows
        model.scale_shift.scale.copy_(torch.tensor([1.7, 0.6], dtype=torch.float64))
    return model


def test_contract_float64(tiny_mace, methanol, cu_cell):
    testing.check_adapter(load_model(tiny_mace), methanol, cu_cell)


def test_contract_float32(tiny_mace, methanol, cu_cell):
    model32 = build_mace([1, 6, 8, 13, 29], cutoff=4.0, dtype=torch.float32)
    testing.check_adapter(load_model(model32), methanol, cu_cell)


@pytest.mark.parametrize("head", ["pt_head", "default"])
def test_multihead_features_match_autograd(multihead_mace, methanol, cu_cell, head):
    adapter = MACEAdapter(multihead_mace, head=head)
    testing.check_last_layer_features(adapter, [methanol, cu_cell])


def test_multihead_features_differ_between_heads(multihead_mace, cu_cell):
    phi = [
        MACEAdapter(multihead_mace, head=h)(MACEAdapter(multihead_mace).graph(cu_cell), True)
        for h in ("pt_head", "default")
    ]
    assert not torch.allclose(phi[0].features, phi[1].features)


def test_unknown_head_is_an_error(multihead_mace):
    with pytest.raises(ValueError, match="unknown head 'nope'.*pt_head"):
        MACEAdapter(multihead_mace, head="nope")


def test_matches_mace_calculator(tiny_mace, cu_cell, methanol):
    from mace.calculators import MACECalculator

    ours = Calculator(tiny_mace)
    theirs = MACECalculator(models=tiny_mace, device="cpu", default_dtype="float64")
    for atoms in (cu_cell, methanol):
        a, b = atoms.copy(), atoms.copy()
        a.calc, b.calc = ours, theirs
        assert abs(a.get_potential_energy() - b.get_potential_energy()) < 1e-6
        np.testing.assert_allclose(a.get_forces(), b.get_forces(), atol=1e-6)
    a, b = cu_cell.copy(), cu_cell.copy()
    a.calc, b.calc = ours, theirs
    np.testing.assert_allclose(a.get_stress(), b.get_stress(), atol=1e-6)
