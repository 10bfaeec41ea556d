"""The data contract: every result name, its shape and its unit, written once.

``PER_ATOM`` names have a leading dimension of ``n_atoms``; ``PER_STRUCTURE`` names have a leading
dimension of ``n_structures``. Batching and slicing code uses these sets instead of guessing.

=========================  ====================  =========  =====================================
name                       shape                 unit       meaning
=========================  ====================  =========  =====================================
energy                     (n_structures,)       eV         total energy (biased if a bias is on)
free_energy                (n_structures,)       eV         same as energy (no electronic entropy)
energies                   (n_atoms,)            eV         per-atom energies
forces                     (n_atoms, 3)          eV/A       -dE/dr (biased if a bias is on)
stress                     (n_structures, 3, 3)  eV/A^3     (1/V) dE/d(eps) (periodic cells only)
energy_uncertainty         (n_structures,)       eV         calibrated energy uncertainty
forces_uncertainty         (n_atoms,)            eV/A       calibrated per-atom force uncertainty
stress_uncertainty         (n_structures, 3, 3)  eV/A^3     calibrated ensemble spread of the stress
unbiased_energy            (n_structures,)       eV         energy without the bias
unbiased_forces            (n_atoms, 3)          eV/A       forces without the bias
unbiased_stress            (n_structures, 3, 3)  eV/A^3     stress without the bias
bias_energy                (n_structures,)       eV         -tau * U, the bias added to the energy
bias_forces                (n_atoms, 3)          eV/A       the bias part of the forces
bias_stress                (n_structures, 3, 3)  eV/A^3     the bias part of the stress
bias_strength              (n_structures,)       1          tau in use for this call
bias_stress_strength       (n_structures,)       1          tau_sigma of the bias stress (periodic)
members_energy             (K, n_structures)     eV         each ensemble member's energy
members_energies           (K, n_atoms)          eV         each member's per-atom energies
members_forces             (K, n_atoms, 3)       eV/A       each member's forces
members_stress             (K, n_structures,3,3) eV/A^3     each member's stress
=========================  ====================  =========  =====================================

``MEMBERS_PER_ATOM`` / ``MEMBERS_PER_STRUCTURE`` names carry the member axis K first and the atom
or structure axis second. For one structure the ASE calculator gives ``members_energy`` as (K,),
``members_stress`` as (K, 6) Voigt and per-atom member arrays as (K, n_atoms, ...); in
``atoms.arrays`` these are stored as (n_atoms, K * ...) so that extended XYZ can write them.
"""

from __future__ import annotations

ENERGY = "energy"
FREE_ENERGY = "free_energy"
ENERGIES = "energies"
FORCES = "forces"
STRESS = "stress"

ENERGY_UNCERTAINTY = "energy_uncertainty"
FORCES_UNCERTAINTY = "forces_uncertainty"
STRESS_UNCERTAINTY = "stress_uncertainty"

UNBIASED_ENERGY = "unbiased_energy"
UNBIASED_FORCES = "unbiased_forces"
UNBIASED_STRESS = "unbiased_stress"
BIAS_ENERGY = "bias_energy"
BIAS_FORCES = "bias_forces"
BIAS_STRESS = "bias_stress"
BIAS_STRENGTH = "bias_strength"
BIAS_STRESS_STRENGTH = "bias_stress_strength"

MEMBERS_ENERGY = "members_energy"
MEMBERS_ENERGIES = "members_energies"
MEMBERS_FORCES = "members_forces"
MEMBERS_STRESS = "members_stress"

PER_ATOM = frozenset({ENERGIES, FORCES, FORCES_UNCERTAINTY, UNBIASED_FORCES, BIAS_FORCES})
PER_STRUCTURE = frozenset(
    {
        ENERGY,
        FREE_ENERGY,
        STRESS,
        ENERGY_UNCERTAINTY,
        STRESS_UNCERTAINTY,
        UNBIASED_ENERGY,
        UNBIASED_STRESS,
        BIAS_ENERGY,
        BIAS_STRESS,
        BIAS_STRENGTH,
        BIAS_STRESS_STRENGTH,
    }
)

MEMBERS_PER_ATOM = frozenset({MEMBERS_ENERGIES, MEMBERS_FORCES})
MEMBERS_PER_STRUCTURE = frozenset({MEMBERS_ENERGY, MEMBERS_STRESS})

#: Names ASE itself knows; only these go in ``Calculator.implemented_properties``.
ASE_PROPERTIES = ("energy", "free_energy", "forces", "stress", "energies")
#: Every result name beyond ASE's (what ``copy_to_atoms`` writes into an Atoms).
EXTRA = (PER_ATOM | PER_STRUCTURE | MEMBERS_PER_ATOM | MEMBERS_PER_STRUCTURE) - set(ASE_PROPERTIES)
