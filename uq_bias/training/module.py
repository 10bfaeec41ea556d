"""Lightning module for energy / forces / stress training of any :class:`AtomisticModel`.

Forces and stress come from one autograd pass over the energy (``create_graph=True`` in training
so that the loss can be differentiated again). Validation needs autograd too: the Trainer must use
``inference_mode=False``, and :func:`~uq_bias.training.loss.predict` enables grad itself.
Validation runs on the EMA weights; the module remembers the state of the best validation epoch.
Epoch metrics are :class:`~uq_bias.training.metrics.EpochErrors`: sums and counts reduced over
the ranks before the ratios are taken, so under DDP they are the exact epoch values. The first
validation (Lightning's sanity check over the whole validation set) is epoch 0, the model before
training. The history, best loss and best state travel with the module's state (extra state),
so they come back from spawned processes (``strategy="ddp_spawn"``) too.
"""

from __future__ import annotations

import warnings
from contextlib import ExitStack

import lightning
import torch

from uq_bias.models import AtomisticModel
from uq_bias.training.datamodule import Batch
from uq_bias.training.ema import ExponentialMovingAverage
from uq_bias.training.loss import LossWeights, batch_errors, predict
from uq_bias.training.metrics import EpochErrors

SCHEDULERS = ("plateau", "cosine", "none")


class AtomisticLitModule(lightning.LightningModule):
    """Train ``model`` on :class:`~uq_bias.training.datamodule.Batch` es.

    Args:
        model: the adapter-wrapped model to train.
        weights: loss weights.
        lr: Adam (AMSGrad) learning rate.
        weight_decay: Adam weight decay.
        ema_decay: EMA decay of the weights, or None for no EMA.
        scheduler: 'plateau' (x factor after ``scheduler_patience`` epochs without progress on
            val_loss), 'cosine' (to 0 over ``max_epochs``) or 'none'.
        max_epochs: used by the cosine schedule.
        keep_initial: the model before training (epoch 0, the sanity check of ``fit``) competes
            for ``best_state``; False: only trained epochs do (so fine-tuning always changes
            the model).

    After each validation epoch ``record`` holds that epoch's metrics (plain floats) and
    ``history`` all of them so far; after
    fitting, ``best_state`` holds the model state (EMA weights) of the lowest val_loss seen.
    """

    def __init__(
        self,
        model: AtomisticModel,
        *,
        weights: LossWeights | None = None,
        lr: float = 1e-2,
        weight_decay: float = 0.0,
        ema_decay: float | None = 0.99,
        scheduler: str = "plateau",
        scheduler_patience: int = 5,
        scheduler_factor: float = 0.8,
        max_epochs: int = 100,
        keep_initial: bool = True,
    ):
        super().__init__()
        if scheduler not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {scheduler!r}; choose one of {SCHEDULERS}")
        if not lr > 0:
            raise ValueError(f"the learning rate must be positive, got {lr}")
        self.model = model
        self.weights = weights or LossWeights()
        self.lr, self.weight_decay = lr, weight_decay
        self.ema_decay = ema_decay
        self.scheduler_name = scheduler
        self.scheduler_patience, self.scheduler_factor = scheduler_patience, scheduler_factor
        self.max_epochs = max_epochs
        self.keep_initial = keep_initial
        self.ema: ExponentialMovingAverage | None = None
        self.record: dict[str, float] = {}
        self.history: list[dict[str, float]] = []
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_loss = float("inf")
        self.train_errors = EpochErrors()
        self.val_errors = EpochErrors()
        self._swap = ExitStack()

    def forward(self, batch: Batch, create_graph: bool = False):
        stress = bool(batch.has_stress.any()) and self.weights.stress > 0
        return predict(self.model, batch.graph, stress=stress, create_graph=create_graph)

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(
            params, lr=self.lr, weight_decay=self.weight_decay, amsgrad=True
        )
        if self.scheduler_name == "none":
            return optimizer
        if self.scheduler_name == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                optimizer, T_max=max(self.max_epochs, 1)
            )
            return {"optimizer": optimizer, "lr_scheduler": scheduler}
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=self.scheduler_factor, patience=self.scheduler_patience
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss", "interval": "epoch"},
        }

    def on_fit_start(self) -> None:
        if self.ema_decay is not None:
            self.ema = ExponentialMovingAverage(self.model.parameters(), self.ema_decay)

    def on_train_epoch_start(self) -> None:
        self.train_errors.reset()

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        errors = batch_errors(self(batch, create_graph=True), batch)
        loss = errors.loss(self.weights)
        self.train_errors.update(errors)
        self.log("loss", loss.detach(), prog_bar=True, batch_size=batch.graph.n_structures)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update()

    def on_validation_epoch_start(self) -> None:
        self.val_errors.reset()
        if self.ema is not None:
            self._swap.enter_context(self.ema.swapped())

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        with torch.enable_grad():
            pred = self(batch, create_graph=False)
        self.val_errors.update(batch_errors(pred, batch))

    def on_validation_epoch_end(self) -> None:
        try:
            self._finish_validation()
        finally:
            self._swap.close()

    def _finish_validation(self) -> None:
        fitting = self.trainer.state.fn == "fit"
        with warnings.catch_warnings():  # torchmetrics warns on a rank that saw no update
            warnings.filterwarnings("ignore", message=".*compute.*before.*update", module="torch")
            metrics = self.val_errors.compute().metrics("val", self.weights)
        if fitting and self.train_errors.update_count:  # every rank trains the same steps
            metrics.update(self.train_errors.compute().metrics("train", self.weights))
        for name, value in metrics.items():  # already reduced over the ranks
            self.log(name, value, prog_bar=name in ("val_loss", "val_forces_rmse"))
        sanity = self.trainer.sanity_checking
        epoch = self.current_epoch + 1 if fitting and not sanity else 0
        optimizers = self.trainer.optimizers
        lr = optimizers[0].param_groups[0]["lr"] if optimizers else self.lr
        self.record = {"epoch": epoch, "lr": lr} | {k: float(v) for k, v in metrics.items()}
        self.history.append(dict(self.record))
        val_loss = self.record["val_loss"]
        competes = self.keep_initial or not (fitting and sanity)
        if competes and val_loss < self.best_loss:
            self.best_loss = val_loss
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def get_extra_state(self) -> dict:
        """History, best loss and best state: saved with the module's state (so they come back
        from spawned DDP processes)."""
        return {"history": self.history, "best_loss": self.best_loss, "best": self.best_state}

    def set_extra_state(self, state: dict) -> None:
        self.history, self.best_loss = list(state["history"]), float(state["best_loss"])
        self.best_state = state["best"]
