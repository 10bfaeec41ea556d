"""A real ASE calculator for the campaign tests: EMT that fails on some frames.

It is loaded by the campaign through its file path (``/path/flaky.py:FlakyEMT``), the way a user
plugs in their own calculator. Frames whose content hash (see ``uq_bias.campaign.state.frame_id``)
is divisible by ``fail_every`` raise (``mode='raise'``), get NaN forces (``mode='nan'``) or
forces of one atom too few (``mode='short'``) or a stress of 5 numbers (``mode='stress5'``).
"""

from __future__ import annotations

import time

import numpy as np
from ase.calculators.calculator import all_changes
from ase.calculators.emt import EMT

from uq_bias.campaign.state import frame_id


def fails(atoms, fail_every: int) -> bool:
    """The rule: the frame's content hash is divisible by ``fail_every`` (0 never fails)."""
    return fail_every > 0 and int(frame_id(atoms)[2:], 16) % fail_every == 0


class FlakyEMT(EMT):
    """EMT that raises or returns NaN for the frames selected by :func:`fails`; sleeps
    ``delay`` seconds per frame (to give a test time to kill a campaign while it labels)."""

    def __init__(self, fail_every: int = 0, mode: str = "raise", delay: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.fail_every, self.mode, self.delay = fail_every, mode, delay

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        time.sleep(self.delay)
        if fails(atoms, self.fail_every) and self.mode == "raise":
            raise RuntimeError("flaky reference: SCF did not converge")
        super().calculate(atoms, properties, system_changes)
        if fails(atoms, self.fail_every) and self.mode == "nan":
            self.results["forces"] = np.full_like(self.results["forces"], np.nan)
        if fails(atoms, self.fail_every) and self.mode == "short":
            self.results["forces"] = self.results["forces"][:-1]
        if fails(atoms, self.fail_every) and self.mode == "stress5" and "stress" in self.results:
            self.results["stress"] = self.results["stress"][:5]


class NoStressEMT(EMT):
    """EMT that says it computes energy and forces only, like many users' calculators."""

    implemented_properties = ["energy", "free_energy", "forces"]
