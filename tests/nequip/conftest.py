"""NequIP fixtures: a tiny NequIP model trained by nequip's own ``nequip-train`` on EMT Cu/Al data,
saved as a checkpoint and packaged with ``nequip-package``.

These tests run only where nequip is installed (its own environment: nequip needs e3nn>=0.6,
mace-torch pins e3nn==0.4.4); elsewhere every test module skips with ``importorskip``.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from ase.io import write

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


@dataclass(frozen=True)
class TrainedNequIP:
    checkpoint: Path
    package: Path
    frames: list
    config: dict


def _run(args: list[str], cwd: Path) -> None:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
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
