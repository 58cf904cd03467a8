"""The four networks of the paper, by name.

>>> model = create("inception_resnet_v2", num_classes=10, width=0.5)
>>> variables = model.init(jax.random.key(0), jnp.zeros((1, 299, 299, 3)))
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from inception_jax.errors import UserError
from inception_jax.models.network import InceptionNet

# name -> "module:Class"; imported on first use so that naming a model loads only that model.
_REGISTRY = {
    "inception_v3": "inception_jax.models.inception_v3:InceptionV3",
    "inception_v4": "inception_jax.models.inception_v4:InceptionV4",
    "inception_resnet_v1": "inception_jax.models.inception_resnet_v1:InceptionResNetV1",
    "inception_resnet_v2": "inception_jax.models.inception_resnet_v2:InceptionResNetV2",
}


def available_models() -> list[str]:
    """Names accepted by `create`."""
    return sorted(_REGISTRY)


def model_class(name: str) -> type[InceptionNet]:
    """The module class registered under `name` (UserError listing the known names)."""
    if name not in _REGISTRY:
        raise UserError(f"Unknown model {name!r}. Known models: {', '.join(available_models())}.")
    module_name, class_name = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


# Fields set by the code for one run, not knobs a weights file or config records.
RUN_FIELDS = ("parent", "name", "platform", "inference_units")


def knobs_of(model: InceptionNet) -> dict[str, Any]:
    """The constructor knobs that recreate `model` with `create` (lists for tuples)."""
    return {f.name: list(v) if isinstance(v := getattr(model, f.name), tuple) else v
            for f in dataclasses.fields(model) if f.name not in RUN_FIELDS}


def create(name: str, **overrides) -> InceptionNet:
    """Returns the network `name` with constructor fields replaced by `overrides`."""
    cls = model_class(name)
    fields = {f.name for f in dataclasses.fields(cls)} - {"parent", "name"}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise UserError(
            f"{name} has no option(s) {', '.join(unknown)}. Options: {', '.join(sorted(fields))}."
        )
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()})


__all__ = ["InceptionNet", "available_models", "create", "knobs_of", "model_class"]
