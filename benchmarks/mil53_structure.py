"""The MIL-53(Al) start cell of the periodic recipe, relaxed by its own reference, GFN1-xTB.

    python benchmarks/mil53_structure.py ../shared/structures/MIL-53_Al_lp.cif \\
        recipes/structures/mil53_al_lp_gfn1.extxyz

Reads the large-pore cell (76 atoms, conventional orthorhombic cell, CoRE MOF 2014 entry SABVUN
from Loiseau et al., Chem. Eur. J. 10, 1373 (2004); every H present), relaxes positions and cell
together with GFN1-xTB (tblite defaults) under ASE's ``FrechetCellFilter`` and ``BFGS`` to
``--fmax`` (eV/A, the filter's generalised forces: atom forces and virial per atom), and writes
the relaxed cell with its energy, forces and stress and a ``source`` line in ``info``. The X-ray
C-H and O-H bonds are short (1.08 and 0.86 A), so the unrelaxed cell starts with forces up to
7 eV/A; a walker started there would spend its first picoseconds falling.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

SOURCE = (
    "MIL-53(Al) large pore, CoRE MOF 2014 SABVUN (Loiseau et al., Chem. Eur. J. 10, 1373 "
    "(2004)) as the conventional cell of arkrist/gcmc-mil53 (MIT); relaxed in positions and "
    "cell by GFN1-xTB (tblite) with benchmarks/mil53_structure.py"
)


def relax(path: Path, fmax: float, steps: int):
    """The relaxed cell (ase.Atoms with a single-point calculator holding its results)."""
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.filters import FrechetCellFilter
    from ase.io import read
    from ase.optimize import BFGS
    from tblite.ase import TBLite

    atoms = read(path)
    atoms.calc = TBLite(method="GFN1-xTB", verbosity=0)
    opt = BFGS(FrechetCellFilter(atoms), logfile="-")
    converged = opt.run(fmax=fmax, steps=steps)
    results = {
        "energy": atoms.get_potential_energy(),
        "forces": atoms.get_forces(),
        "stress": atoms.get_stress(),
    }
    relaxed = atoms.copy()
    relaxed.calc = SinglePointCalculator(relaxed, **results)
    relaxed.info["source"] = SOURCE
    relaxed.info["relaxed_fmax"] = float(fmax) if converged else -1.0
    return relaxed, converged


def main(argv=None) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("cif", type=Path, help="the MIL-53(Al) large-pore CIF")
    p.add_argument("out", type=Path, help="extended XYZ to write")
    p.add_argument("--fmax", type=float, default=0.02, help="eV/A")
    p.add_argument("--steps", type=int, default=400)
    args = p.parse_args(argv)
    relaxed, converged = relax(args.cif, args.fmax, args.steps)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".part")
    relaxed.write(tmp, format="extxyz")
    tmp.replace(args.out)
    a, b, c = relaxed.cell.lengths()
    print(
        f"wrote {args.out}: {'converged' if converged else 'NOT converged'}, cell {a:.3f} x "
        f"{b:.3f} x {c:.3f} A, {relaxed.get_volume():.1f} A^3"
    )
    return 0 if converged else 1


if __name__ == "__main__":
    sys.exit(main())
