"""The numbers a population may vary per member, as one struct the train step reads.

A single run holds them as Python numbers taken from its config, so they are constants of its
compiled step (the program is the one it always was). A population stacks one `HParams` per
member as arrays with a leading member axis (`stack`); its vmapped step reads member i's row,
so one compiled program trains every member with its own values.
"""

from __future__ import annotations

from typing import Any

import flax
import ml_collections
import numpy as np

# The config keys whose values may differ between the members of one population. Every other
# knob shapes the program (model, width, blocks, residual_mode, batch, image size, dtype, data)
# and so must be the same for every member.
POPULATION_KNOBS = (
    "seed",
    "model.residual_scales",
    "model.dropout_rate",
    "schedule.base_lr",
    "schedule.warmup_epochs",
    "optim.weight_decay",
    "train.label_smoothing",
    "train.aux_loss_weight",
    "train.ema_decay",
)


def peak_learning_rate(schedule_cfg: ml_collections.ConfigDict, global_batch_size: int) -> float:
    """base_lr scaled linearly with the batch: base_lr · B / reference_batch_size."""
    return schedule_cfg.base_lr * global_batch_size / schedule_cfg.reference_batch_size


def warmup_steps(schedule_cfg: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
    """The linear warm-up's length in steps (0 = none)."""
    return round(schedule_cfg.warmup_epochs * steps_per_epoch)


@flax.struct.dataclass
class HParams:
    """One run's (or, stacked, every member's) population knobs, as the step uses them."""

    seed: Any  # initialisation and dropout (the data order is the run's `data` seed)
    peak_lr: Any  # the batch-scaled base_lr
    warmup_steps: Any
    weight_decay: Any
    label_smoothing: Any
    aux_loss_weight: Any
    ema_decay: Any
    dropout_rate: Any
    residual_scales: Any  # per stage; () for networks without residual stages

    @classmethod
    def of(cls, config: ml_collections.ConfigDict, steps_per_epoch: int) -> HParams:
        """A run's values as Python numbers (constants of its compiled step)."""
        return cls(
            seed=config.seed,
            peak_lr=peak_learning_rate(config.schedule, config.train.global_batch_size),
            warmup_steps=warmup_steps(config.schedule, steps_per_epoch),
            weight_decay=config.optim.weight_decay,
            label_smoothing=config.train.label_smoothing,
            aux_loss_weight=config.train.aux_loss_weight,
            ema_decay=config.train.ema_decay,
            dropout_rate=config.model.dropout_rate,
            residual_scales=tuple(config.model.get("residual_scales", ())),
        )

    def model_knobs(self) -> dict[str, Any]:
        """The model fields this struct sets (arrays when stacked: the model takes them)."""
        knobs = {"dropout_rate": self.dropout_rate}
        if len(self.residual_scales):
            knobs["residual_scales"] = tuple(self.residual_scales)
        return knobs


def stack(members: list[HParams]) -> HParams:
    """Every member's values as one struct of arrays with a leading member axis: float32, and
    int32 for the seed and the warm-up length (the dtypes a single run's constants take)."""
    ints = ("seed", "warmup_steps")

    def column(name: str) -> np.ndarray:
        values = [getattr(m, name) for m in members]
        return np.asarray(values, np.int32 if name in ints else np.float32)

    return HParams(**{f: column(f) for f in HParams.__dataclass_fields__})

