"""The active-learning campaign: train, calibrate, explore with biased MD, select, label, repeat.

``run(config)`` runs (or resumes) a campaign from a YAML file or a :class:`CampaignConfig`;
``demo()`` runs the built-in alanine-dipeptide campaign. Everything a campaign produces lives in
one folder (see :mod:`uq_bias.campaign.state`). Heavy dependencies load only when used.
"""

from __future__ import annotations

from uq_bias.campaign.config import CampaignConfig, ConfigError, from_dict, load
from uq_bias.campaign.demo import demo  # light: torch loads when it runs
from uq_bias.campaign.loop import CampaignResult, run
from uq_bias.errors import StageError

# imported here, not on first call: importing the submodule later would rebind the package's
# `demo` to the module (a second `uq_bias.campaign.demo()` then failed: "module not callable")
__all__ = [
    "CampaignConfig",
    "CampaignResult",
    "ConfigError",
    "StageError",
    "demo",
    "from_dict",
    "load",
    "run",
]
