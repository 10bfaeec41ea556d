"""The one place where the benchmarks keep third-party noise off the console.

:func:`quiet` applies, for the rest of the process, what ``uq-bias`` commands apply while they
run (:func:`uq_bias.cli.quiet_third_party`: the warnings of :data:`uq_bias.cli.QUIET_WARNINGS`
off, mace's import notice swallowed), which covers the third-party filters of the test suite
(``[tool.pytest.ini_options] filterwarnings``: Lightning's ``LeafSpec``, TorchScript's type
system, ``torch.jit`` deprecations, ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``), and sets Lightning's
loggers to WARNING (no "GPU available" or tip lines). Warnings raised from ``uq_bias`` itself
still show. Call it first thing in a benchmark's ``main`` and as the ``initializer`` of every
process pool (a worker started by spawn or forkserver does not inherit the filters).
"""

from __future__ import annotations

import contextlib
import logging

#: Holds the entered filter context for the life of the process (never closed).
_ENTERED = contextlib.ExitStack()

#: Lightning's loggers that print info lines.
LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric", "pytorch_lightning")


def quiet() -> None:
    """Silence third-party warnings and Lightning's info lines in this process (see the module
    docstring); calling it again adds nothing that matters."""
    from uq_bias.cli import quiet_third_party

    _ENTERED.enter_context(quiet_third_party())
    for name in LIGHTNING_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
