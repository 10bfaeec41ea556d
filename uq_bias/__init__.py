"""uq_bias: calibrated uncertainty, uncertainty-biased MD and active learning for MLIPs.

Nothing heavy is imported here: mace, nequip, dask and tblite load only when used.
"""

from __future__ import annotations

from uq_bias.bias import BiasConfig
from uq_bias.calculator import Calculator
from uq_bias.dynamics import ExploreConfig, WatchdogConfig, explore
from uq_bias.graph import Graph, atoms_to_graph
from uq_bias.models import AtomisticModel, GenericAdapter, load_model
from uq_bias.selection import Selection, select

__version__ = "0.1.0"

__all__ = [
    "AtomisticModel",
    "BiasConfig",
    "Calculator",
    "ExploreConfig",
    "GenericAdapter",
    "Graph",
    "Selection",
    "WatchdogConfig",
    "atoms_to_graph",
    "explore",
    "load_model",
    "select",
]
