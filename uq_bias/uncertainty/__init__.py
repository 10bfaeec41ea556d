"""Uncertainty models: deep ensembles and gradient features of one model, calibrated.

Nothing heavy is imported here: mace loads only when a MACE model is wrapped.
"""

from __future__ import annotations

from uq_bias.uncertainty.base import UncertaintyModel, UncertaintyOutput
from uq_bias.uncertainty.calibration import calibrate
from uq_bias.uncertainty.conditioned import ConditionedFeatures
from uq_bias.uncertainty.ensemble import Ensemble
from uq_bias.uncertainty.gradient import GradientFeatureUncertainty
from uq_bias.uncertainty.io import load, save

__all__ = [
    "ConditionedFeatures",
    "Ensemble",
    "GradientFeatureUncertainty",
    "UncertaintyModel",
    "UncertaintyOutput",
    "calibrate",
    "load",
    "save",
]
