"""NequIP adapter: loading, exact last-layer features, the shipped adapter contract checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from uq_bias import load_model
from uq_bias.models import energy_gradients
from uq_bias.testing import check_adapter, check_last_layer_features

pytest.importorskip("nequip.model")  # a real nequip, not a namespace of test dirs

from uq_bias.models.nequip import NequIPAdapter, nequip_global_state  # noqa: E402


@pytest.fixture(scope="module")
def adapter(trained_nequip):
    return load_model(trained_nequip.checkpoint)


def test_load_model_reads_checkpoint_and_package_alike(trained_nequip):
    dtype, rng = torch.get_default_dtype(), torch.random.get_rng_state()
    from_checkpoint = load_model(trained_nequip.checkpoint)
    from_package = load_model(str(trained_nequip.package))
    assert torch.get_default_dtype() == dtype, "loading changed torch's default dtype"
    assert torch.equal(torch.random.get_rng_state(), rng), "loading reseeded torch"
    for model in (from_checkpoint, from_package):
        assert isinstance(model, NequIPAdapter)
        assert model.cutoff == 4.0 and model.atomic_numbers == (13, 29)
    frames = trained_nequip.frames[:3]
    a = from_checkpoint(from_checkpoint.graph(frames))
    b = from_package(from_package.graph(frames))
    assert torch.allclose(a.energy, b.energy, rtol=0, atol=1e-10)
    assert torch.allclose(a.node_energy, b.node_energy, rtol=0, atol=1e-10)


def test_nequip_training_moved_the_forces_towards_emt(adapter, trained_nequip):
    """A check on the fixture: the trained model's forces are closer to EMT's than those of the
    same model at its initial weights (rebuilt from the training config's seed)."""
    from nequip.model import NequIPGNNModel

    config = dict(trained_nequip.config["training_module"]["model"])
    config.pop("_target_")
    with nequip_global_state():
        initial = NequIPAdapter(NequIPGNNModel(**config))
    frames = trained_nequip.frames
    reference = torch.tensor(np.concatenate([a.get_forces() for a in frames]))
    errors = []
    for model in (initial, adapter):
        graph = model.graph(frames).requires_grad_(True)
        forces, _ = energy_gradients(model(graph).energy, graph)
        errors.append(float((forces - reference).abs().mean()))
    assert errors[1] < 0.8 * errors[0], f"force MAE before/after training: {errors}"


def test_features_include_per_type_scales(adapter, cell, cluster):
    """sum_i phi_i = dE/dw to 1e-10; the trained per-type scales differ, so a phi without
    them would fail this check."""
    scales = adapter._scale_shifts[0].scales.detach().flatten()
    assert abs(float(scales[0] - scales[1])) > 0.1
    check_last_layer_features(adapter, [cluster, cell])


@pytest.mark.parametrize(
    "readout",
    [
        {},
        {"readout_mlp_hidden_layers_depth": 1, "readout_mlp_hidden_layers_width": 6},
        {
            "readout_mlp_hidden_layers_depth": 2,
            "readout_mlp_hidden_layers_width": 5,
            "readout_mlp_nonlinearity": None,
        },
    ],
    ids=["linear", "mlp", "deep-linear"],
)
def test_features_for_readout_variants(readout, build_nequip, cell, cluster):
    model = NequIPAdapter(build_nequip(**readout))
    expected = readout.get("readout_mlp_hidden_layers_width", 8)
    assert model.n_features == expected
    check_last_layer_features(model, [cluster, cell])


def test_adapter_contract(adapter, cell, cluster):
    """Batching, invariance, unchanged inputs, finite-difference forces and stress."""
    check_adapter(adapter, molecule=cluster, periodic=cell)


def test_python_built_module_through_load_model(build_nequip):
    model = build_nequip()
    adapter = load_model(model)
    assert isinstance(adapter, NequIPAdapter) and adapter.model is model


def test_type_names_that_are_not_symbols_need_a_map(build_nequip, cell):
    named = build_nequip(type_names=("A", "B"))
    with pytest.raises(ValueError, match="species_to_type"):
        NequIPAdapter(named)
    mapped = NequIPAdapter(named, species_to_type={"Al": "A", "Cu": "B"})
    reference = NequIPAdapter(build_nequip())  # the same seed: the same weights
    with torch.no_grad():
        a = mapped(mapped.graph(cell)).energy
        b = reference(reference.graph(cell)).energy
    assert torch.allclose(a, b, rtol=0, atol=1e-10)


def test_unknown_element_is_refused(adapter, cell):
    cell.numbers[0] = 1
    with pytest.raises(ValueError, match="not known to the model"):
        adapter.graph(cell)


def test_float32_model_and_fixed_dtype(build_nequip, cell, cluster):
    """A float32 nequip model works in float32 (phi to 1e-4); converting dtypes is refused."""
    model32 = NequIPAdapter(build_nequip(model_dtype="float32"))
    assert model32.dtype == torch.float32
    check_last_layer_features(model32, [cluster, cell])
    model64 = NequIPAdapter(build_nequip())
    with pytest.raises(ValueError, match="model_dtype"):
        load_model(model64, dtype=torch.float32)
    assert model64.dtype == torch.float64
