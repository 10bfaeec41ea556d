"""Wrap an existing MACE model file with a calibrated uncertainty and run uncertainty-biased MD.

    python recipes/wrap_mace_biased_md.py my.model train.xyz valid.xyz --steps 2000

train.xyz: structures the model was trained on (labels not needed); valid.xyz: labelled frames
it was not trained on (energy and forces, for calibration). The MD starts from the first
validation frame; the frames kept along the way (with their calibrated uncertainties in
``info``/``arrays``) go to ``--out`` and the calibrated uncertainty model to the folder
``--unc-out``, ready for ``uq-bias select --unc UNC_OUT --pool OUT``. The model file is a pickle:
use only files you trust.
"""

from __future__ import annotations

import argparse

import ase.io

from uq_bias import Calculator
from uq_bias.bias import BiasConfig
from uq_bias.dynamics import explore
from uq_bias.uncertainty import GradientFeatureUncertainty, calibrate, save


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="MACE model file (a trusted pickle)")
    parser.add_argument("train", help="training structures, extended XYZ")
    parser.add_argument("valid", help="labelled validation frames, extended XYZ")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--temperature", type=float, default=300.0, help="K")
    parser.add_argument("--tau-rel", type=float, default=0.3, help="relative bias strength")
    parser.add_argument("--out", default="biased_md.extxyz")
    parser.add_argument("--unc-out", default="unc", help="folder for the uncertainty model")
    args = parser.parse_args(argv)

    # 1. the model's last-layer gradient features, conditioned on its training structures
    model = GradientFeatureUncertainty(args.model).fit(ase.io.read(args.train, ":"))
    # 2. calibrated on held-out labelled frames (conformal, 90% coverage)
    valid = ase.io.read(args.valid, ":")
    report = calibrate(model, valid, method="conformal", alpha=0.1)
    print(f"calibration factors: {report['factors']}")
    save(model, args.unc_out)
    # 3. uncertainty-biased MD: E_b = E - tau U with tau = tau_rel <|F|>/<|F_bias|>
    calc = Calculator(model, bias=BiasConfig(tau_rel=args.tau_rel, window=20))
    result = explore(
        calc,
        valid[0],
        steps=args.steps,
        temperature=args.temperature,
        sample_every=10,
        progress=False,
        trajectory=args.out,
    )
    walker = result.walkers[0]
    print(
        f"{len(result.frames)} frames in {args.out}; walker stopped: {walker.stop_reason} at "
        f"step {walker.stop_step}; largest atom uncertainty {walker.max_uncertainty:.3f} eV/A"
    )


if __name__ == "__main__":
    main()
