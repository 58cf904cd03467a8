"""Evaluation of one model or an ensemble, with a crop scheme, over a dataset split.

A `Member` is a network and its variables, loaded from a training workdir (moving-average
weights by default) or from a weights file. `ensemble_probabilities` is the pure function:
images `[B, K, S, S, 3]` → class probabilities averaged over the K crops and the members (the
paper's ensembles average in probability space). `evaluate` runs it, jitted once per crop
scheme and sharded over the batch, over the whole split.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm import tqdm

from inception_jax import population, sharding
from inception_jax.checkpoint import checkpoints_dir, read_checkpoint
from inception_jax.data.class_names import run_class_names
from inception_jax.data.crop_schemes import check_scheme
from inception_jax.data.device import global_batch
from inception_jax.data.pipeline import dataset_info, eval_batches
from inception_jax.errors import UserError
from inception_jax.losses import top_k_correct
from inception_jax.models import InceptionNet, create
from inception_jax.weights import check_fits, load_weights


@dataclasses.dataclass(frozen=True)
class Member:
    """One network of an ensemble: where it came from, the model and its variables."""

    source: str
    model_name: str
    model: InceptionNet
    variables: dict[str, Any]
    image_size: int | None = None  # the size it was trained at, where known
    class_names: tuple[str, ...] | None = None  # its classes' names, where known

    @property
    def num_classes(self) -> int:
        """Outputs of the classifier."""
        return self.model.num_classes


def member_from_checkpoint(workdir: str, use_ema: bool = True, step: int | None = None) -> Member:
    """The newest (or `step`'s) checkpoint of a training workdir; EMA weights by default.

    A population member's folder reads its member of the group's checkpoint."""
    meta, state, run_dir = _run_checkpoint(workdir, step)
    knobs = dict(meta["model"])
    name = knobs.pop("name")
    variables = state["ema"] if use_ema else {
        "params": state["params"], "batch_stats": state["batch_stats"]
    }
    model = create(name, **knobs)
    check_fits(model, variables, meta["image_size"], workdir)
    return Member(workdir, name, model, jax.tree.map(np.asarray, dict(variables)),
                  image_size=meta["image_size"], class_names=run_class_names(run_dir))


def _run_checkpoint(workdir: str, step: int | None) -> tuple[dict[str, Any], Any, str]:
    """(identity with the run's own model knobs, its state, its folder) of a run's checkpoint,
    or of one member of a population's checkpoint."""
    located = population.read_member_file(workdir)
    if located is None:
        meta, state = read_checkpoint(workdir, step)
        members = meta.get("population", {}).get("members")
        if members:
            raise UserError(
                f"{workdir} holds a population of {len(members)} members: pass one member's "
                f"folder, e.g. {os.path.join(workdir, members[0]['name'])}."
            )
        return meta, state, os.path.dirname(checkpoints_dir(workdir))
    group_dir, index = located
    meta, state = read_checkpoint(group_dir, step)
    entry = meta["population"]["members"][index]
    meta["model"] = {**meta["model"], **{k.split(".", 1)[1]: v for k, v in entry.items()
                                         if k.startswith("model.")}}
    return meta, jax.tree.map(lambda a: a[index], state["members"]), workdir


def member_from_weights(path: str) -> Member:
    """A weights file written by `import_weights`, `export` (or `save_weights`)."""
    w = load_weights(path)
    model = create(w.model, **w.knobs)
    check_fits(model, w.variables, w.image_size or model.min_input_size, path)
    return Member(path, w.model, model, w.variables, image_size=w.image_size,
                  class_names=w.class_names)


def member_from(weights: str | None, checkpoint: str | None, use_ema: bool = True,
                step: int | None = None) -> Member:
    """The one network a command names: `--weights=FILE` or `--checkpoint=WORKDIR`."""
    if bool(weights) == bool(checkpoint):
        raise UserError("Name the network: --weights=FILE (a weights file) or "
                        "--checkpoint=WORKDIR (a training run), one of them.")
    if weights:
        return member_from_weights(weights)
    return member_from_checkpoint(checkpoint, use_ema, step)


def class_offsets(members: Sequence[Member], num_classes: int) -> list[int]:
    """Per member, the logits to skip so its classes line up with the dataset's.

    A 1001-way network (TF-Slim, background class 0) on a 1000-class dataset skips logit 0.
    """
    offsets = []
    for m in members:
        if m.num_classes == num_classes:
            offsets.append(0)
        elif m.num_classes == num_classes + 1:
            offsets.append(1)
        else:
            raise UserError(
                f"{m.source} predicts {m.num_classes} classes but the dataset has {num_classes}: "
                "evaluate it on the dataset it was trained for (set --config.data.name) or "
                "fine-tune it first (train.py with --config.train.init_weights)."
            )
    return offsets


def ensemble_probabilities(
    members: Sequence[Member], offsets: Sequence[int], variables: Sequence[Any], images: jax.Array
) -> jax.Array:
    """[B, K, S, S, 3] crops → [B, C] probabilities averaged over crops and members."""
    b, k = images.shape[:2]
    flat = images.reshape((b * k, *images.shape[2:]))
    total = 0.0
    for member, offset, v in zip(members, offsets, variables, strict=True):
        logits = member.model.apply(v, flat, train=False)[:, offset:]
        probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
        total = total + probs.reshape((b, k, -1)).mean(axis=1)
    return total / len(members)


def make_eval_step(members: Sequence[Member], offsets: Sequence[int]):
    """(variables of each member, batch) → sums of top-1/top-5 hits and of real examples."""

    def step(variables, batch):
        images = batch["image"]
        if images.ndim == 4:  # the single central crop
            images = images[:, None]
        probs = ensemble_probabilities(members, offsets, variables, images)
        return hit_sums(probs, batch["label"], batch["mask"])

    return step


def hit_sums(scores: jax.Array, labels: jax.Array, mask: jax.Array) -> dict[str, jax.Array]:
    """Sums of top-1/top-5 hits and of real examples (padding has mask 0) in one batch."""
    return {
        "top1": jnp.sum(top_k_correct(scores, labels, 1) * mask),
        "top5": jnp.sum(top_k_correct(scores, labels, 5) * mask),
        "count": jnp.sum(mask),
    }


def accumulate_hits(
    step: Any, variables: Any, batches: Any, batch_sharding: Any, on_batch: Any = None
) -> dict[str, Any]:
    """Runs `step(variables, batch)` (hit sums) over `batches`; top-1, top-5 in [0, 1], count.

    `on_batch(count)` is called after each batch with its number of real examples. A step
    that returns one sum per population member gives one accuracy per member (numpy arrays).
    """
    totals: dict[str, Any] = {"top1": 0.0, "top5": 0.0, "count": 0.0}
    for batch in batches:
        out = jax.device_get(step(variables, global_batch(batch, batch_sharding)))
        for key in totals:
            totals[key] = totals[key] + np.asarray(out[key], np.float64)
        if on_batch is not None:
            on_batch(int(np.max(out["count"])))
    count = np.maximum(totals["count"], 1.0)
    result = {"top1": totals["top1"] / count, "top5": totals["top5"] / count,
              "count": totals["count"]}
    if np.ndim(count) == 0:
        return {"top1": float(result["top1"]), "top5": float(result["top5"]),
                "count": int(result["count"])}
    return result


def evaluate(
    members: Sequence[Member],
    data_cfg: ml_collections.ConfigDict,
    crops: str = "center",
    batch_size: int = 64,
    max_examples: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Top-1/top-5 accuracy (in [0, 1]) of the ensemble of `members` over the eval split."""
    num_crops = check_scheme(crops)
    if not members:
        raise UserError("Nothing to evaluate: pass at least one --checkpoint or --weights.")
    info = dataset_info(data_cfg)
    offsets = class_offsets(members, info.num_classes)
    for m in members:
        m.model.check_image_size(data_cfg.image_size, "--config.data.image_size")
    sharding.check_batch_size(batch_size)
    mesh = sharding.create_mesh(1)
    batch_sharding = sharding.batch_sharding(mesh)
    replicated = sharding.replicated(mesh)
    variables = [jax.device_put(m.variables, replicated) for m in members]
    step = jax.jit(
        make_eval_step(members, offsets),
        in_shardings=(replicated, batch_sharding),
        out_shardings=replicated,
    )
    total = min(max_examples or info.num_eval_examples, info.num_eval_examples)
    start = time.perf_counter()
    bar = tqdm(total=total, unit="img", desc=f"eval {crops}-crop",
               disable=not progress or jax.process_index() > 0)
    batches = eval_batches(data_cfg, batch_size, crops, max_examples)
    result = accumulate_hits(step, variables, batches, batch_sharding, bar.update)
    bar.close()
    return {
        **result,
        "crops": crops,
        "num_crops": num_crops,
        "members": [{"source": m.source, "model": m.model_name} for m in members],
        "dataset": data_cfg.name,
        "split": data_cfg.eval_split,
        "image_size": data_cfg.image_size,
        "seconds": time.perf_counter() - start,
    }
