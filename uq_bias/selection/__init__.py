"""Batch selection: pick the pool frames worth labelling, informative and different.

Layers: pure tensor functions on a feature matrix G (n, D), whose Gram matrix G G^T is the
posterior kernel of the pool (:func:`maxdet`, :func:`maxdet_kernel`, :func:`maxdist`,
:func:`lcmd`, :func:`random_selection`, and the slow :func:`greedy_logdet_reference`), then the
:func:`select` wrapper that computes G from an uncertainty model in chunks.
"""

from __future__ import annotations

from uq_bias.selection.api import METHODS, SelectionOptions, pool_features, select
from uq_bias.selection.lcmd import lcmd
from uq_bias.selection.maxdet import maxdet, maxdet_kernel
from uq_bias.selection.maxdist import maxdist
from uq_bias.selection.random_pick import random_selection
from uq_bias.selection.reference import greedy_logdet_reference
from uq_bias.selection.result import Selection

__all__ = [
    "METHODS",
    "Selection",
    "SelectionOptions",
    "greedy_logdet_reference",
    "lcmd",
    "maxdet",
    "maxdet_kernel",
    "maxdist",
    "pool_features",
    "random_selection",
    "select",
]
