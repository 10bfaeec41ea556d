"""Fixtures shared by the uncertainty tests: tiny MACE members (untrained, different seeds)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def cu_members():
    """Four tiny float64 ScaleShiftMACE models for Al/Cu that differ only in their seed."""
    from uq_bias.training.build import build_mace

    return [build_mace([13, 29], cutoff=4.0, seed=seed, dtype=torch.float64) for seed in range(4)]
