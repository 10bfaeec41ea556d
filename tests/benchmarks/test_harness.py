"""The pure parts of the benchmark harness: cache keys, targets, verdict, table, case, stress."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from harness import Case, Lowest, Ratio, Subset, TestSet, Variant, testsets
from harness.report import table
from harness.scoring import has_stress, stress_rmse
from harness.verdict import final, nearest, verdict

from uq_bias.campaign.cvs import CollectiveVariable

CVS = (CollectiveVariable("phi", "dihedral", [0, 1, 2, 3]),)


@dataclass(frozen=True)
class Spec:
    temperatures: tuple[float, ...] = (300.0, 600.0)
    frames: int = 3


def frames_of(spec: Spec, say=print) -> list[Atoms]:
    out = []
    for t in spec.temperatures:
        for j in range(spec.frames):
            atoms = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.7 + 0.01 * j]])
            atoms.calc = SinglePointCalculator(atoms, energy=-t / 1000, forces=np.zeros((2, 3)))
            atoms.info["subset"] = f"md{int(t)}"
            out.append(atoms)
    return out


# --- test-set cache -------------------------------------------------------------------------


def test_content_key_is_sha1_of_sorted_json_and_follows_every_field():
    spec = Spec()
    text = '{"frames": 3, "temperatures": [300.0, 600.0]}'  # written out by hand
    assert testsets.content_key(spec) == hashlib.sha1(text.encode()).hexdigest()[:10]
    assert testsets.content_key(Spec(frames=4)) != testsets.content_key(spec)
    assert testsets.content_key(Spec(temperatures=(300.0,))) != testsets.content_key(spec)


def test_alanine_test_set_keys_are_those_of_the_cached_files():
    """The cache file names of existing runs; a change here silently remakes the test sets."""
    import alanine_test_set

    assert alanine_test_set.QUICK.key() == "fa8df9052d"
    assert alanine_test_set.TestSetSpec().key() == "84bd17f496"


def test_content_key_refuses_what_is_not_a_dataclass_instance():
    with pytest.raises(TypeError, match="dataclass instance"):
        testsets.content_key({"frames": 3})
    with pytest.raises(TypeError, match="dataclass instance"):
        testsets.content_key(Spec)


def test_test_set_is_made_once_per_spec(tmp_path):
    calls = []

    def make(spec, say):
        calls.append(spec)
        return frames_of(spec)

    first, path = testsets.load_or_make("h2", Spec(), make, tmp_path, say=lambda m: None)
    again, same = testsets.load_or_make("h2", Spec(), make, tmp_path, say=lambda m: None)
    assert calls == [Spec()] and same == path
    assert path.name == f"h2_{testsets.content_key(Spec())}.extxyz"
    assert [a.info["subset"] for a in again] == [a.info["subset"] for a in first]
    assert [a.get_potential_energy() for a in again] == pytest.approx([-0.3] * 3 + [-0.6] * 3)
    other, other_path = testsets.load_or_make("h2", Spec(frames=1), make, tmp_path, print)
    assert len(calls) == 2 and other_path != path and len(other) == 2


# --- targets --------------------------------------------------------------------------------

SHORT = {"b": "biased", "p": "plain 300 K", "h": "plain-1200K"}


def test_ratio_target_passes_at_the_threshold_and_misses_below_or_without_values():
    target = Ratio("explored", "b", "p", 2.0, "explored coverage")
    assert target.passed({"b": 0.4, "p": 0.2})  # exactly 2
    assert not target.passed({"b": 0.39, "p": 0.2})
    assert not target.passed({"b": 0.4, "p": 0.0})
    assert not target.passed({"b": math.nan, "p": 0.2})
    assert target.line({"b": 0.099, "p": 0.101}, SHORT) == (
        "- MISS: biased / plain 300 K explored coverage = 0.98 (target >= 2.0)"
    )


def test_lowest_target_names_the_lowest_and_ignores_nan():
    target = Lowest("rmse", "b", "force RMSE on the test frames", "eV/A")
    assert target.passed({"b": 0.2, "p": 0.3, "h": math.nan})
    assert not target.passed({"b": 0.5, "p": 0.3, "h": 0.4})
    assert target.line({"b": 0.493, "p": 0.441, "h": 0.352}) == (
        "- MISS: force RMSE on the test frames b 0.493, p 0.441, h 0.352 eV/A (lowest: h)"
    )


# --- case, verdict and table ----------------------------------------------------------------


def make_case(targets=()) -> Case:
    base = {"data": {"initial_frames": 8}, "exploration": {"walkers": 2, "steps": 300}}
    variants = (
        Variant("b", "biased", "b_folder", {"temperature": 300.0, "bias": {"tau_rel": 1.0}}),
        Variant("p", "plain 300 K", "p_folder", {"temperature": 300.0}),
        Variant("h", "plain-1200K", "h_folder", {"temperature": 1200.0}),
    )
    test_set = TestSet("h2", Spec(), frames_of, (Subset("rama", "rama"), Subset("md", "md")))
    return Case("x", base, variants, test_set, targets, CVS)


def test_campaigns_of_a_case_differ_only_in_exploration():
    case = make_case()
    configs = [case.config(v, seed=3) for v in case.variants]
    for config in configs:
        rest = {k: v for k, v in config.items() if k not in ("exploration", "folder")}
        assert rest == {"seed": 3, "data": {"initial_frames": 8}}
        assert config["exploration"]["walkers"] == 2 and config["exploration"]["steps"] == 300
    assert configs[2]["exploration"]["temperature"] == 1200.0
    assert [c["folder"] for c in configs] == ["b_folder", "p_folder", "h_folder"]
    configs[0]["data"]["initial_frames"] = 99  # a config is a copy, not the case's base
    assert case.base["data"]["initial_frames"] == 8


def test_case_refuses_unknown_target_variants_repeated_names_and_campaign_keys():
    with pytest.raises(ValueError, match=r"names \['q'\].*choose from \['b', 'p', 'h'\]"):
        make_case((Ratio("explored", "b", "q", 2.0, "explored coverage"),))
    case = make_case()
    with pytest.raises(ValueError, match="must be given and differ"):
        Case("x", {}, (case.variants[0],) * 2, case.test_set, (), CVS)
    with pytest.raises(ValueError, match="'seed' and 'folder'"):
        Case("x", {"seed": 1}, case.variants, case.test_set, (), CVS)
    with pytest.raises(ValueError, match="declare the CVs"):
        Case("x", {}, case.variants, case.test_set, (), ())


def row(k, labels, explored, rama_f, md_f=0.5):
    return {
        "iteration": k,
        "n_labelled": labels,
        "n_explored": 10 * (k - 1),
        "n_broken": 0,
        "explored": explored,
        "explored_all": explored,
        "labelled": 0.09,
        "rama_energy_rmse": 0.0213,
        "rama_forces_rmse": rama_f,
        "rama_atom_coverage": 0.5,
        "md_energy_rmse": 0.0176,
        "md_forces_rmse": md_f,
        "md_atom_coverage": 0.5,
        "label_height": 0.213,
    }


def results_of(b_labels=24, b2=0.3):
    return {
        ("b", 0): [row(1, 8, None, 1.0), row(2, 16, 0.2, 0.6), row(3, b_labels, 0.3, 0.25)],
        ("b", 1): [row(1, 8, None, 1.0), row(2, 16, 0.2, 0.6), row(3, b_labels, b2, 0.35)],
        ("p", 0): [row(1, 8, None, 1.0), row(2, 16, 0.1, 0.5), row(3, 24, 0.15, 0.4)],
        ("h", 0): [row(1, 8, None, 1.0), row(2, 16, 0.3, 0.5), row(3, 24, 0.32, 0.5)],
    }


def test_final_and_nearest_are_means_over_seeds():
    results = results_of(b2=0.5)
    assert final(results, "b", "explored") == pytest.approx(0.4)
    assert final(results, "b", "rama_forces_rmse") == pytest.approx(0.3)
    assert math.isnan(final({}, "b", "explored"))
    assert nearest(results, "b", "rama_forces_rmse", 15) == pytest.approx(0.6)
    assert nearest(results, "b", "n_labelled", 12) == 8  # the earlier row on a tie


def test_verdict_at_equal_labels():
    targets = (
        Ratio("explored", "b", "p", 2.0, "explored coverage"),
        Ratio("explored", "b", "h", 0.9, "explored coverage"),
        Lowest("rama_forces_rmse", "b", "force RMSE on the Ramachandran test frames", "eV/A"),
    )
    lines = verdict(results_of(), make_case(targets))
    assert lines == [
        "At equal labels (b: 24, p: 24, h: 24), means over seeds:",
        "- coverage of explored frames (molecule in one piece): b 0.300, p 0.150, h 0.320",
        "- coverage of all explored frames (broken ones too): b 0.300, p 0.150, h 0.320; "
        "biased / plain 300 K 2.00, biased / plain-1200K 0.94",
        "- coverage of labelled frames: b 0.090, p 0.090, h 0.090",
        "- PASS: biased / plain 300 K explored coverage = 2.00 (target >= 2.0)",
        "- PASS: biased / plain-1200K explored coverage = 0.94 (target >= 0.9)",
        "- PASS: force RMSE on the Ramachandran test frames b 0.300, p 0.400, h 0.500 eV/A "
        "(lowest: b)",
    ]


def test_verdict_at_unequal_labels_compares_the_models_nearest_a_common_count():
    target = Lowest("rama_forces_rmse", "b", "force RMSE on rama", "eV/A")
    lines = verdict(results_of(b_labels=20), make_case((target,)))
    assert lines[0] == (
        "NOT at equal labels (walkers that stopped early kept too few candidates) "
        "(b: 20, p: 24, h: 24), means over seeds:"
    )
    assert lines[-1] == (
        "- nearest 20 labels (b 20, p 16, h 16): force RMSE on rama b 0.300, p 0.500, h 0.500 "
        "eV/A (lowest: b)"
    )


def test_table_has_the_columns_of_the_exploration_benchmark():
    lines = table({("b", 0): results_of()[("b", 0)][:2]}, make_case())
    assert lines[0] == (
        "| campaign | seed | iteration | labels | explored frames | broken | coverage explored "
        "| all | coverage labelled | rama E RMSE (meV/atom) | rama F RMSE (eV/A) | "
        "md E RMSE (meV/atom) | md F RMSE (eV/A) | labels' median height (meV/atom) |"
    )
    assert lines[1] == "|" + " --- |" * 14
    first = "| b | 0 | 1 | 8 | 0 | 0 | - | - | 0.090 | 21.3 | 1.000 | 17.6 | 0.500 | 213 |"
    assert lines[2] == first
    assert lines[3].startswith("| b | 0 | 2 | 16 | 10 | 0 | 0.200 | 0.200 | 0.090 |")


# --- stress ---------------------------------------------------------------------------------


def test_stress_rmse_against_a_hand_sum():
    predicted = np.zeros((2, 3, 3))
    reference = np.zeros((2, 3, 3))
    reference[0, 0, 0], reference[1, 2, 1] = 0.3, -0.4  # squares 0.09 + 0.16 over 18 entries
    assert stress_rmse(predicted, reference) == pytest.approx(math.sqrt(0.25 / 18))
    with pytest.raises(ValueError, match=r"\(S, 3, 3\)"):
        stress_rmse(np.zeros((2, 6)), np.zeros((2, 6)))


def test_stress_is_scored_only_on_periodic_frames_with_a_reference_stress():
    cell = Atoms("Cu", cell=[2.0, 2.0, 2.0], pbc=True)
    cell.calc = SinglePointCalculator(cell, energy=0.0, forces=np.zeros((1, 3)), stress=np.zeros(6))
    molecule = frames_of(Spec(frames=1))[0]
    assert has_stress([cell]) and not has_stress([cell, molecule]) and not has_stress([])
    bare = cell.copy()
    bare.calc = SinglePointCalculator(bare, energy=0.0, forces=np.zeros((1, 3)))
    assert not has_stress([bare])


def test_stress_scored_on_a_real_model_matches_its_ase_calculator(gradient_model, cu8_frames):
    """The stress RMSE of :func:`harness.scoring.score` against the same model's stress taken
    through the ASE calculator (another path, ASE's sign and Voigt order) and EMT's labels."""
    from harness.scoring import score

    from uq_bias import Calculator

    frames = list(cu8_frames[:3])
    errors = []
    for atoms in frames:
        copy = atoms.copy()
        copy.calc = Calculator(gradient_model)
        errors.append(copy.get_stress(voigt=False) - atoms.get_stress(voigt=False))
    expected = math.sqrt(np.mean(np.square(errors)))
    assert expected > 1e-4  # an untrained model: the check has something to compare
    assert score(gradient_model, frames)["stress_rmse"] == pytest.approx(expected, rel=1e-6)
    assert "stress_rmse" not in score(gradient_model, frames_of(Spec(frames=1)))
