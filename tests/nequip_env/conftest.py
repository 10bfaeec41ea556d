"""NequIP fixtures: a tiny NequIP model trained by nequip's own ``nequip-train`` on EMT Cu/Al data,
saved as a checkpoint and packaged with ``nequip-package``.

These tests run only where nequip is installed (its own environment: nequip needs e3nn>=0.6,
mace-torch pins e3nn==0.4.4); elsewhere every test module skips with ``importorskip``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from ase.build import bulk
from ase.io import write

from uq_bias.models.nequip import nequip_global_state

CUTOFF = 4.0
TYPE_NAMES = ["Al", "Cu"]


def training_config(data_file: Path, out_dir: Path, shift: float, epochs: int = 3) -> dict:
    """A minimal nequip-train config: a 2-layer l_max=1 NequIP model in float64 with distinct,
    trainable per-type energy scales (so that phi must carry them); ``shift`` is the per-atom
    energy shift of both types, eV."""
    transforms = [
        {
            "_target_": "nequip.data.transforms.ChemicalSpeciesToAtomTypeMapper",
            "model_type_names": TYPE_NAMES,
            "chemical_species_to_atom_type_map": {name: name for name in TYPE_NAMES},
        },
        {"_target_": "nequip.data.transforms.NeighborListTransform", "r_max": CUTOFF},
    ]
    loader = {"_target_": "torch.utils.data.DataLoader", "batch_size": 2}
    return {
        "run": ["train"],
        "data": {
            "_target_": "nequip.data.datamodule.ASEDataModule",
            "seed": 1,
            "split_dataset": {"file_path": str(data_file), "train": 6, "val": 2},
            "transforms": transforms,
            "train_dataloader": {**loader, "shuffle": True},
            "val_dataloader": loader,
        },
        "trainer": {
            "_target_": "lightning.Trainer",
            "accelerator": "cpu",
            "max_epochs": epochs,
            "logger": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "callbacks": [
                {
                    "_target_": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "dirpath": str(out_dir),
                    "save_last": True,
                }
            ],
        },
        "training_module": {
            "_target_": "nequip.train.NequIPLightningModule",
            "loss": {
                "_target_": "nequip.train.EnergyForceLoss",
                "per_atom_energy": True,
                "coeffs": {"total_energy": 1.0, "forces": 1.0},
            },
            "val_metrics": {
                "_target_": "nequip.train.EnergyForceMetrics",
                "coeffs": {"total_energy_mae": 1.0, "forces_mae": 1.0},
            },
            "optimizer": {"_target_": "torch.optim.Adam", "lr": 0.02},
            "model": {
                "_target_": "nequip.model.NequIPGNNModel",
                "seed": 2,
                "model_dtype": "float64",
                "type_names": TYPE_NAMES,
                "r_max": CUTOFF,
                "num_layers": 2,
                "l_max": 1,
                "num_features": 8,
                "radial_mlp_width": 16,
                "avg_num_neighbors": 40.0,
                "per_type_energy_scales": {"Al": 0.3, "Cu": 0.6},
                "per_type_energy_shifts": {"Al": shift, "Cu": shift},
                "per_type_energy_scales_trainable": True,
            },
        },
        "global_options": {"allow_tf32": False},
    }


def cu_al_cell(seed: int = 4):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 1)
    atoms.numbers[::3] = 13
    atoms.rattle(0.05, seed=seed)
    return atoms


def cu_al_cluster(seed: int = 5):
    """A non-periodic 13-atom Cu/Al cluster (fcc centre and its 12 neighbours)."""
    atoms = bulk("Cu", "fcc", a=3.6) * (3, 3, 3)
    centre = atoms.positions[13]
    distances = np.linalg.norm(atoms.positions - centre, axis=1)
    cluster = atoms[distances < 2.6]
    cluster.pbc = False
    cluster.cell = np.zeros((3, 3))
    cluster.numbers[::4] = 13
    cluster.rattle(0.05, seed=seed)
    return cluster


def build_nequip_model(
    type_names=("Al", "Cu"), seed: int = 3, model_dtype: str = "float64", **readout
) -> torch.nn.Module:
    """A fresh NequIPGNNModel built in Python (no training); ``readout`` options go to it."""
    from nequip.model import NequIPGNNModel

    scales = dict(zip(type_names, (0.4, 0.9)))
    with nequip_global_state():
        return NequIPGNNModel(
            seed=seed,
            model_dtype=model_dtype,
            type_names=list(type_names),
            r_max=4.0,
            num_layers=2,
            l_max=1,
            num_features=8,
            radial_mlp_width=16,
            avg_num_neighbors=20.0,
            per_type_energy_scales=scales,
            per_type_energy_shifts=dict(zip(type_names, (-1.0, 0.5))),
            **readout,
        )


@pytest.fixture
def cell():
    """A rattled 16-atom periodic Cu/Al cell."""
    return cu_al_cell()


@pytest.fixture
def cluster():
    """A rattled 13-atom Cu/Al cluster (not periodic)."""
    return cu_al_cluster()


@pytest.fixture(scope="session")
def build_nequip():
    """The builder of fresh float64 NequIP models (see :func:`build_nequip_model`)."""
    return build_nequip_model


@dataclass(frozen=True)
class TrainedNequIP:
    checkpoint: Path
    package: Path
    frames: list
    config: dict


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """Tiny models gain nothing from threads, and on 2 busy cores OpenMP's spinning threads make
    nequip's scatter ~40x slower: run these tests on one thread, then restore the setting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _run(args: list[str], cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        output = f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        raise RuntimeError(f"{' '.join(args)} failed:\n{output}")


@pytest.fixture(scope="session")
def trained_nequip(tmp_path_factory, cu_frames) -> TrainedNequIP:
    """Train with ``nequip-train`` (3 epochs on 6 EMT frames), then ``nequip-package`` it."""
    root = tmp_path_factory.mktemp("nequip")
    frames = list(cu_frames[:8])
    write(root / "train.xyz", frames)
    shift = float(np.mean([a.get_potential_energy() / len(a) for a in frames]))
    config = training_config(root / "train.xyz", root / "out", shift)
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    python = sys.executable
    _run(
        [python, "-m", "nequip.scripts.train", "-cp", str(root), "-cn", "config"]
        + [f"hydra.run.dir={root / 'hydra'}"],
        root,
    )
    checkpoint = root / "out" / "last.ckpt"
    package = root / "out" / "model.nequip.zip"
    _run([python, "-m", "nequip.scripts.package", "build", str(checkpoint), str(package)], root)
    return TrainedNequIP(checkpoint, package, frames, config)
