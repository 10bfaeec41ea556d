"""Config: strict validation that names the key, before any work; defaults documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from uq_bias.campaign import config as cfg


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "campaign.yaml"
    path.write_text(text)
    return path


def test_valid_file_reads_types_and_resolves_paths(tmp_path):
    path = write(
        tmp_path,
        "data: {structures: start.xyz, rattle: 1}\n"
        "exploration: {bias: {weights: {H: 0.5}}, walkers: 3}\n"
        "trainer: {devices: [0, 1], strategy: ddp}\n",
    )
    config = cfg.load(path)
    assert config.data.rattle == 1.0 and isinstance(config.data.rattle, float)
    assert config.exploration.walkers == 3
    assert config.exploration.bias.weights == {"H": 0.5}
    assert config.exploration.bias.tau_rel == 0.1  # the relative default when tau is not given
    assert config.trainer.devices == [0, 1]
    assert config.folder == "campaign"  # named after the YAML file
    assert config.path(config.data.structures) == tmp_path.resolve() / "start.xyz"
    assert config.selection.batch_size == cfg.SelectionConfig().batch_size  # default kept


@pytest.mark.parametrize(
    "text, message",
    [
        ("data: {structures: a.xyz}\nexploraton: {}\n", "unknown config key 'exploraton'"),
        ("data: {structures: a.xyz, ratle: 0.1}\n", "unknown config key 'data.ratle'"),
        (
            "data: {structures: a.xyz}\nexploration: {bias: {tau_rell: 1}}\n",
            "'exploration.bias.tau_rell' (did you mean 'tau_rel'?)",
        ),
        (
            "data: {structures: a.xyz}\nexploration: {bias: {tau: 1, tau_rel: 0.1}}\n",
            "'exploration.bias.tau': BiasConfig: give exactly one of tau",
        ),
        (
            "data: {structures: a.xyz}\nexploration: {bias: {weights: {Xx: 0}}}\n",
            "'exploration.bias.weights': BiasConfig: unknown element 'Xx'",
        ),
        (
            "data: {structures: a.xyz}\nexploration: {watchdog: {min_distance: -1}}\n",
            "'exploration.watchdog.min_distance': WatchdogConfig: min_distance must be",
        ),
        (
            "data: {structures: a.xyz}\nexploration: {seed: 3}\n",
            "'exploration.seed' is set by the campaign",
        ),
        (
            "data: {structures: a.xyz}\ntraining: {weights: {forces: -1}}\n",
            "'training.weights.forces': loss weight forces must be >= 0",
        ),
        (
            "data: {structures: a.xyz}\nexploration: {steps: many}\n",
            "'exploration.steps': expected int",
        ),
        (
            "data: {structures: a.xyz}\nexploration: {steps: 2.5}\n",
            "'exploration.steps': expected int",
        ),
        ("data: {structures: a.xyz}\nmodel: {preset: huge}\n", "'model.preset': expected 'tiny'"),
        (
            "data: {structures: a.xyz}\nreport: {plots: yes please}\n",
            "'report.plots': expected bool",
        ),
        ("data: {structures: a.xyz}\noracle: emt\n", "config key 'oracle': expected a mapping"),
        ("data: {structures: a.xyz}\noracle: {kind: import}\n", "'oracle.calculator'"),
        ("data: {structures: a.xyz}\nmodel: {ensemble: 0}\n", "'model.ensemble': ensemble must"),
        ("data: {rattle: 0.1}\n", "'data.structures'"),
        (
            "data: {structures: a.xyz}\nexploration: {ladder: [[300, 1.0]]}\n",
            "'exploration.ladder': ladder gives pressures, which need ensemble: npt",
        ),
        (
            "data: {structures: a.xyz}\nexploration: {pressure: 5.0}\n",
            "'exploration.pressure': ExploreConfig: pressure 5.0 GPa acts only in ensemble 'npt'",
        ),
        (
            "data: {structures: a.xyz}\nexploration: {ensemble: npt, pressure: 101325}\n",
            "'exploration.pressure': ExploreConfig: pressure 101325.0 GPa is not a finite",
        ),
        (
            "data: {structures: a.xyz}\n"
            "exploration: {ensemble: npt, ladder: [[300, 0], [600, 1e5]]}\n",
            "ladder point 1: pressure 100000.0 GPa is not a finite pressure within +-10000 GPa",
        ),
        (
            "data: {structures: a.xyz}\nexploration: {ladder: [[-5, 0]]}\n",
            "with T > 0 K",
        ),
        (
            "data: {structures: a.xyz}\nexploration: {ladder: [[300, 0]], engine: batched}\n",
            "ladder needs engine: ase",
        ),
        (
            "data: {structures: a.xyz}\nselection: {thermal_band: -1}\n",
            "selection.thermal_band must be a number >= 0",
        ),
        (
            "data: {structures: a.xyz}\nselection: {thermal_band: .nan}\n",
            "selection.thermal_band must be a number >= 0",
        ),
        (
            "data: {structures: a.xyz}\nselection: {thermal_band: wide}\n",
            "'selection.thermal_band'",
        ),
    ],
)
def test_bad_config_names_the_key(tmp_path, text, message):
    with pytest.raises(cfg.ConfigError) as info:
        cfg.load(write(tmp_path, text))
    assert message in str(info.value)


def test_unknown_key_lists_valid_keys(tmp_path):
    with pytest.raises(cfg.ConfigError) as info:
        cfg.load(write(tmp_path, "data: {structures: a.xyz}\nstop: {iteratons: 2}\n"))
    for key in ("iterations", "label_budget", "target_forces_rmse"):
        assert key in str(info.value)
    with pytest.raises(cfg.ConfigError) as info:  # keys the campaign sets are not offered
        cfg.load(write(tmp_path, "data: {structures: a.xyz}\ntraining: {sed: 2}\n"))
    assert "max_epochs" in str(info.value) and "seed" not in str(info.value)


def test_every_key_is_documented_with_its_default():
    """docs/config.md is generated from the option declarations: it must be up to date."""
    docs = Path(__file__).parents[2] / "docs" / "config.md"
    assert docs.read_text() == cfg.markdown_reference(), (
        "docs/config.md is stale: run `python -m uq_bias.docs`"
    )
    text = docs.read_text()
    for key in (
        "exploration.bias.tau_rel",
        "exploration.watchdog.max_hal_ratio",
        "trainer.strategy",
    ):
        assert f"| `{key}` |" in text


def test_round_trip_through_dict(tmp_path):
    config = cfg.from_dict({"data": {"structures": "x.xyz"}, "seed": 7}, tmp_path)
    again = cfg.from_dict(cfg.to_dict(config), tmp_path)
    assert again == config


def test_ladder_puts_walker_i_at_point_i_mod_len(tmp_path):
    """Each walker's MD settings carry its ladder point; the other settings are the shared ones."""
    from ase.build import bulk

    from uq_bias.campaign.stages.exploration import on_ladder
    from uq_bias.dynamics import ExploreConfig, walker_specs

    text = "data: {structures: a.xyz}\nexploration: {ensemble: npt, walkers: 3, ladder: "
    config = cfg.load(write(tmp_path, text + "[[300, 0], [600, 2.5]]}\n"))
    e = config.exploration
    specs = walker_specs(
        lambda: None, bulk("Cu", cubic=True), ExploreConfig(ensemble="npt"), walkers=3
    )
    laddered = on_ladder(e, specs)
    got = [(s.config.temperature, s.config.pressure) for s in laddered]
    assert got == [(300.0, 0.0), (600.0, 2.5), (300.0, 0.0)]
    assert all(s.config.ensemble == "npt" and s.config.steps == e.steps for s in laddered)
    assert (
        on_ladder(cfg.load(write(tmp_path, "data: {structures: a.xyz}\n")).exploration, specs)
        == specs
    )


def test_a_yaml_with_structures_and_oracle_runs_the_biased_recipe(tmp_path):
    """Issue 23: the defaults of exploration.bias and exploration.watchdog are the biased
    alanine recipe (recipes/alanine_dipeptide_biased.yaml spells them out)."""
    recipes = Path(__file__).parents[2] / "recipes"
    path = tmp_path / "campaign.yaml"
    path.write_text("data: {structures: builtin:alanine_dipeptide}\noracle: {kind: gfn2-xtb}\n")
    minimal, recipe = cfg.load(path), cfg.load(recipes / "alanine_dipeptide_biased.yaml")
    assert minimal.exploration.bias == recipe.exploration.bias
    assert minimal.exploration.watchdog == recipe.exploration.watchdog
    bias, watchdog = minimal.exploration.bias, minimal.exploration.watchdog
    assert (bias.tau_rel, bias.project, bias.fade, bias.fade_kt) == (0.1, "auto", None, [1.5, 2.7])
    assert (watchdog.max_energy_rise_kt, watchdog.max_energy_drop_kt) == (4.0, 2.0)
    assert (watchdog.min_distance_ratio, watchdog.max_bond_stretch) == (0.6, 1.5)
