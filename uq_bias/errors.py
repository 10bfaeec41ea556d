"""Errors that stop a run with a message for its user, not a traceback.

The CLI prints them as one line and exits 2, like a bad option
(:class:`uq_bias.options.ConfigError`).
"""

from __future__ import annotations


class StageError(RuntimeError):
    """A campaign stage failed in a way that would come again on a rerun (every walker stopped on
    the same calculator error, say). Nothing of the failed stage was kept, everything finished
    before it was; the message says what failed, where, and that the campaign resumes at that
    stage once the cause is corrected."""
