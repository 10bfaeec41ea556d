"""harness.quiet: the third-party warnings the test suite ignores are off in benchmarks; our
package's own warnings are not."""

from __future__ import annotations

import builtins
import logging
import re
import sys
import warnings
from pathlib import Path

import pytest
from harness.quiet import LIGHTNING_LOGGERS, quiet

ROOT = Path(__file__).resolve().parents[2]

#: (message, category, module) as the libraries raise them (seen on a benchmark's console).
THIRD_PARTY = [
    (
        "The TorchScript type system doesn't support instance-level annotations on empty "
        "non-base types in `__init__`.",
        UserWarning,
        "ast",
    ),
    (
        "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec) "
        "and treespec.is_leaf()` instead.",
        DeprecationWarning,
        "lightning.pytorch.utilities._pytree",
    ),
    (
        "Environment variable TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD detected, since the`weights_only` "
        "argument was not explicitly passed to `torch.load`, forcing weights_only=False.",
        UserWarning,
        "e3nn.o3._wigner",
    ),
    (
        "`torch.jit.script` is deprecated. Please switch to `torch.compile`.",
        DeprecationWarning,
        "mace.modules.blocks",
    ),
]
OURS = ("the bias window (3 steps) is shorter than one sample", UserWarning, "uq_bias.bias")


def _pytest_ignores() -> list[tuple[str, type]]:
    """(message regex, category) of every ``ignore`` entry of the suite's filterwarnings."""
    if sys.version_info < (3, 11):
        pytest.skip("tomllib needs Python 3.11")
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    entries = config["tool"]["pytest"]["ini_options"]["filterwarnings"]
    out = []
    for entry in entries:
        action, message, *rest = entry.split(":") + [""]
        if action == "ignore":
            category = getattr(builtins, rest[0], None) if rest[0] else Warning
            out.append((message, category or Warning))
    return out


def _emit(samples) -> list[str]:
    """Raise ``samples`` under the current filters; the messages that got through."""
    with warnings.catch_warnings(record=True) as seen:
        for message, category, module in samples:
            warnings.warn_explicit(message, category, f"{module}.py", 1, module=module)
    return [str(w.message) for w in seen]


def test_every_filter_of_the_test_suite_has_a_sample_here():
    for pattern, category in _pytest_ignores():
        hits = [m for m, c, _ in THIRD_PARTY if issubclass(c, category) and re.match(pattern, m)]
        assert hits, f"no sample for the suite's filter {pattern!r}: add one to THIRD_PARTY"


def test_quiet_silences_third_party_warnings_and_lightning_info_but_not_ours():
    levels = {name: logging.getLogger(name).level for name in LIGHTNING_LOGGERS}
    try:
        with warnings.catch_warnings():
            warnings.resetwarnings()  # not the suite's own filters: they would hide these too
            warnings.simplefilter("always")
            assert len(_emit(THIRD_PARTY)) == len(THIRD_PARTY)  # they do show without quiet
            quiet()
            assert _emit(THIRD_PARTY) == []
            assert _emit([OURS]) == [OURS[0]]
        assert all(logging.getLogger(n).level == logging.WARNING for n in LIGHTNING_LOGGERS)
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
