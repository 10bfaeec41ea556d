"""The built-in demo: a small active-learning campaign on alanine dipeptide, no files needed.

Alanine dipeptide is built from its SMILES with RDKit (fixed seed), labelled by GFN2-xTB
(tblite), and learned by a tiny MACE with calibrated last-layer uncertainty, in a few
iterations of uncertainty-biased MD, max-det selection and retraining. It is sized to finish
on 2 otherwise idle CPU cores in one to two minutes; it ends by printing the report's path and
its wall time.
"""

from __future__ import annotations

import time
from pathlib import Path

from uq_bias.campaign import config as cfg

#: The demo campaign (see docs/config.md for every key).
DEMO = {
    "seed": 0,
    "data": {
        "structures": "builtin:alanine_dipeptide",
        "initial_frames": 16,
        "rattle": 0.08,
        "valid_fraction": 0.25,
    },
    "oracle": {"kind": "gfn2-xtb"},
    "model": {"preset": "tiny", "cutoff": 4.0, "ensemble": 1},
    "training": {"max_epochs": 40, "batch_size": 4, "lr": 0.01},
    "uncertainty": {"method": "posterior"},
    "calibration": {"method": "conformal", "alpha": 0.1},
    "exploration": {
        "walkers": 2,
        "steps": 300,
        "timestep": 0.5,
        "temperature": 500.0,
        "sample_every": 10,
        "bias": {"tau_rel": 0.3, "window": 20},
    },
    "selection": {"method": "maxdet", "batch_size": 8},
    "stop": {"iterations": 3},
    "executor": {"kind": "inprocess"},
}


def demo_config(folder: str | Path = "uq_bias_demo", **sections) -> cfg.CampaignConfig:
    """The demo's validated config writing to ``folder``; ``sections`` override parts of it,
    e.g. ``stop={"iterations": 1}``."""
    data = {name: dict(value) if isinstance(value, dict) else value for name, value in DEMO.items()}
    for name, value in sections.items():
        data[name] = {**data.get(name, {}), **value} if isinstance(value, dict) else value
    folder = Path(folder).resolve()
    data["folder"] = folder.name
    return cfg.from_dict(data, base_dir=folder.parent)


def demo(folder: str | Path = "uq_bias_demo", *, quiet: bool = False, **sections):
    """Run (or resume) the demo campaign in ``folder``; prints the report path and the time.

    Returns the :class:`~uq_bias.campaign.loop.CampaignResult`.
    """
    import torch

    from uq_bias.campaign.loop import run

    start = time.perf_counter()
    config = demo_config(folder, **sections)
    result = run(config, progress=None if quiet else print)
    seconds = time.perf_counter() - start
    print(f"report: {result.report}")
    print(
        f"demo finished in {seconds:.1f} s on {torch.get_num_threads()} CPU thread(s): "
        f"{result.n_labelled} labelled frames, {result.reason}"
    )
    return result
