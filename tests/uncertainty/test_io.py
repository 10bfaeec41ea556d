"""Save and load: identical predictions, tensors + JSON only, clear errors for another model."""

from __future__ import annotations

import json

import pytest
import torch

from uq_bias.models.mace import MACEAdapter
from uq_bias.training.build import build_mace
from uq_bias.uncertainty import Ensemble, GradientFeatureUncertainty, load, save
from uq_bias.uncertainty.base import UncertaintyModel, UncertaintyOutput
from uq_bias.uncertainty.calibration import calibrate
from uq_bias.uncertainty.io import CONFIG_FILE, STATE_FILE


def outputs(model, frames):
    graph = model.graph(frames).requires_grad_(positions=True)
    out = model(graph, forces=True)
    return [out.energy, out.energy_uncertainty, out.atom_uncertainty]


@pytest.mark.parametrize(
    "options",
    [
        {"method": "posterior", "features": "all_readouts", "sketch_dim": 64},
        {"method": "distance", "features": "sketch", "sketch_dim": 32},
    ],
    ids=["posterior-all-readouts", "distance-sketch"],
)
def test_gradient_round_trip(cu_model, small_cu_frames, tmp_path, options):
    model = GradientFeatureUncertainty(cu_model, **options).fit(small_cu_frames[:5])
    calibrate(model, small_cu_frames[5:7], per_element=True)
    save(model, tmp_path)
    state = torch.load(tmp_path / STATE_FILE, weights_only=True)
    assert all(isinstance(value, torch.Tensor) for value in state.values())
    assert json.loads((tmp_path / CONFIG_FILE).read_text())["options"]["sketch_dim"] > 0
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    loaded = load(tmp_path, model=cu_model)
    for a, b in zip(outputs(model, small_cu_frames[6:]), outputs(loaded, small_cu_frames[6:])):
        assert torch.equal(a, b)


def test_ensemble_round_trip_from_model_files(cu_members, small_cu_frames, tmp_path):
    paths = []
    for k, member in enumerate(cu_members[:2]):
        paths.append(str(tmp_path / f"member{k}.model"))
        torch.save(member, paths[-1])
    ensemble = Ensemble(paths)
    calibrate(ensemble, small_cu_frames[:3])
    save(ensemble, tmp_path / "unc")
    loaded = load(tmp_path / "unc")  # members from the recorded paths
    for a, b in zip(outputs(ensemble, small_cu_frames[3:5]), outputs(loaded, small_cu_frames[3:5])):
        assert torch.equal(a, b)


def test_loading_for_another_model_fails(cu_model, small_cu_frames, tmp_path):
    save(GradientFeatureUncertainty(cu_model).fit(small_cu_frames[:3]), tmp_path)
    with pytest.raises(ValueError, match="weights checksum differs"):
        load(tmp_path, model=build_mace([13, 29], cutoff=4.0, seed=9))
    with pytest.raises(ValueError, match="cutoff: saved 4.0, given 5.0"):
        load(tmp_path, model=build_mace([13, 29], cutoff=5.0, seed=0))
    with pytest.raises(ValueError, match="atomic_numbers"):
        load(tmp_path, model=build_mace([13, 28, 29], cutoff=4.0, seed=0))
    with pytest.raises(ValueError, match="does not record the model file"):
        load(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a saved uncertainty model"):
        load(tmp_path / "nothing", model=cu_model)
    with pytest.raises(ValueError, match="not fitted"):
        save(GradientFeatureUncertainty(MACEAdapter(cu_model)), tmp_path / "unfitted")


def test_a_save_interrupted_between_its_two_files_is_refused(cu_model, small_cu_frames, tmp_path):
    """Overwriting a saved model: the new state is written, then the process dies before the
    config. The pair no longer belongs together, and load says so instead of mixing them."""
    save(GradientFeatureUncertainty(cu_model).fit(small_cu_frames[:3]), tmp_path / "old")
    save(GradientFeatureUncertainty(cu_model).fit(small_cu_frames[:5]), tmp_path / "new")
    old_state = (tmp_path / "old" / STATE_FILE).read_bytes()
    (tmp_path / "old" / STATE_FILE).write_bytes((tmp_path / "new" / STATE_FILE).read_bytes())
    with pytest.raises(ValueError, match="is not the state .* was saved with"):
        load(tmp_path / "old", model=cu_model)
    (tmp_path / "old" / STATE_FILE).write_bytes(old_state)
    load(tmp_path / "old", model=cu_model)  # the pair as saved loads


def test_folder_moved_with_its_model_file_still_loads(cu_model, small_cu_frames, tmp_path):
    campaign = tmp_path / "campaign"
    (campaign / "unc").mkdir(parents=True)
    torch.save(cu_model, campaign / "model.model")
    model = GradientFeatureUncertainty(str(campaign / "model.model")).fit(small_cu_frames[:5])
    save(model, campaign / "unc")
    moved = campaign.rename(tmp_path / "moved")  # the old absolute path no longer exists
    loaded = load(moved / "unc")
    assert loaded.wrapped_paths == [str(moved / "unc" / ".." / "model.model")]
    for a, b in zip(outputs(model, small_cu_frames[6:]), outputs(loaded, small_cu_frames[6:])):
        assert torch.equal(a, b)


class NodeEnergyUncertainty(UncertaintyModel):
    """A toy third uncertainty model, defined here only: U_i = s |E_i|^p, U(S) = sum_i U_i.

    It saves and loads through the registry (its ``kind``), with io.py unchanged."""

    kind = "test_node_energy"

    def __init__(self, model, *, power: float = 1.0):
        super().__init__()
        self.model, self.power = model, power
        self.wrapped_paths = [None]
        self.cutoff, self.atomic_numbers = model.cutoff, tuple(model.atomic_numbers)
        self.register_buffer("scale", torch.zeros((), dtype=torch.float64))

    def wrapped(self):
        return [self.model]

    def options(self):
        return {"power": self.power}

    @classmethod
    def rebuild(cls, models, options):
        return cls(models[0], **options)

    def graph(self, atoms):
        return self.model.graph(atoms)

    def predict(self, graph, *, forces, stress):
        out = self.model(graph)
        atom_u = self.scale * out.node_energy.abs() ** self.power
        energy_u = atom_u.new_zeros(graph.n_structures).index_add(0, graph.batch, atom_u)
        return UncertaintyOutput(out.energy, out.node_energy, energy_u, atom_u)

    def selection_features(self, graph):
        return self.predict(graph, forces=False, stress=False).energy_uncertainty[:, None]


def test_a_third_model_saves_and_loads_through_the_registry(cu_model, small_cu_frames, tmp_path):
    from uq_bias.calculator import Calculator

    adapter = MACEAdapter(cu_model)
    toy = NodeEnergyUncertainty(adapter, power=2.0)
    toy.scale.fill_(0.3)
    save(toy, tmp_path / "toy")
    assert json.loads((tmp_path / "toy" / CONFIG_FILE).read_text())["kind"] == "test_node_energy"
    loaded = load(tmp_path / "toy", model=adapter)
    assert type(loaded) is NodeEnergyUncertainty and loaded.power == 2.0
    assert float(loaded.scale) == 0.3
    for a, b in zip(outputs(toy, small_cu_frames[:2]), outputs(loaded, small_cu_frames[:2])):
        assert torch.equal(a, b)
    # forces and stress are filled by the base class: those of the plain model, by autograd
    atoms = small_cu_frames[0].copy()
    graph = loaded.graph(atoms)
    out = loaded(graph, forces=True, stress=True)
    atoms.calc = Calculator(cu_model)
    torch.testing.assert_close(
        out.forces.detach(), torch.as_tensor(atoms.get_forces()), rtol=0, atol=1e-12
    )
    torch.testing.assert_close(
        out.stress.detach()[0],
        torch.as_tensor(atoms.get_stress(voigt=False)),
        rtol=0,
        atol=1e-12,
    )


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda config, folder: "{not json", "is not valid JSON"),
        (lambda config, folder: "[1, 2]", "holds a JSON list, not an object"),
        (
            lambda config, folder: json.dumps({k: v for k, v in config.items() if k != "models"}),
            "lacks the key(s) ['models']",
        ),
        (
            lambda config, folder: (
                (folder / STATE_FILE).write_bytes(b"not a torch file"),
                json.dumps({k: v for k, v in config.items() if k != "state_sha256"}),
            )[1],
            "is not a readable state file",
        ),
    ],
    ids=["not json", "a list", "no models", "state not torch"],
)
def test_a_damaged_folder_is_named_in_the_error(
    cu_model, small_cu_frames, tmp_path, damage, message
):
    """A damaged or hand-edited uncertainty.json (or state.pt) gives a ValueError naming the
    file and saying to save again, not a KeyError or a pickle error naming nothing."""
    save(GradientFeatureUncertainty(cu_model).fit(small_cu_frames[:5]), tmp_path)
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    (tmp_path / CONFIG_FILE).write_text(damage(config, tmp_path))
    with pytest.raises(ValueError, match="save the model again") as info:
        load(tmp_path, model=cu_model)
    assert message in str(info.value)
    assert str(tmp_path) in str(info.value)
