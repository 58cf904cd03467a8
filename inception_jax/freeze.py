"""Which parameters a fine-tuning run holds fixed (`train.freeze`), resolved once per run.

An entry of `train.freeze` names a group: a unit of the network by its name (`stem`,
`block35`, `mixed_6a`, `reduction_a`, ... — `python -m inception_jax.summary --model NAME` lists
them), `stem` (every unit before the network's first Inception stage), `head` (the classifier),
`aux` (the auxiliary head), or `re:REGEX`, searched in the `/`-joined paths of the parameters
and BatchNorm statistics (e.g. `re:^block17/` or `re:/bn/`).

Frozen parameters get no update, no optimizer state and no weight decay, and no gradient is
computed for them. A unit all of whose variables are frozen runs in inference mode while
training: its BatchNorm layers normalise with their running statistics and keep them. A
BatchNorm frozen inside a unit that also trains keeps its running statistics unchanged.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

import jax
import optax
from flax import traverse_util

from inception_jax.errors import UserError

REGEX_PREFIX = "re:"


@dataclasses.dataclass(frozen=True)
class Frozen:
    """A run's frozen set: `/`-joined variable paths (params and batch_stats, each without
    its collection) and the units that run in inference mode."""

    params: frozenset[str]
    batch_stats: frozenset[str]
    units: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.params or self.batch_stats)

    def param_labels(self, params: Any) -> Any:
        """"frozen" or "trained" per parameter leaf (for `optax.multi_transform`)."""
        return _map_paths(lambda p, _: "frozen" if p in self.params else "trained", params)

    def stop_gradients(self, params: Any) -> Any:
        """`params` with the frozen leaves behind `stop_gradient` (no gradient computed)."""
        return _map_paths(
            lambda p, x: jax.lax.stop_gradient(x) if p in self.params else x, params)

    def keep(self, collection: str, old: Any, new: Any) -> Any:
        """`new` values of a collection ("params" or "batch_stats"), the old ones where frozen
        (a moving average of a constant drifts by rounding; a frozen one stays exact)."""
        frozen = self.params if collection == "params" else self.batch_stats
        return _map_paths(lambda p, o, n: o if p in frozen else n, old, new)

    def keep_variables(self, old: Any, new: Any) -> Any:
        """`keep` over {"params", "batch_stats"}."""
        return {c: self.keep(c, old[c], new[c]) for c in ("params", "batch_stats")}


NOTHING = Frozen(frozenset(), frozenset(), ())


def _join(path: Sequence[Any]) -> str:
    return "/".join(str(getattr(k, "key", k)) for k in path)


def _map_paths(fn, *trees: Any) -> Any:
    """`fn(path, *leaves)` over trees of one structure (paths `/`-joined)."""
    return jax.tree_util.tree_map_with_path(lambda p, *xs: fn(_join(p), *xs), *trees)


def group_names(unit_names: Sequence[str]) -> list[str]:
    """The names `train.freeze` accepts besides `re:REGEX`."""
    return ["stem", *[u for u in unit_names if u != "stem"], "head", "aux"]


def resolve(entries: Sequence[str], variables: dict[str, Any], unit_names: Sequence[str],
            stem_units: Sequence[str], model_name: str) -> Frozen:
    """The frozen set of `entries` over `variables` ({"params", "batch_stats"}, arrays or
    shapes). UserError for an entry that names nothing or a set that freezes every parameter."""
    if isinstance(entries, str):
        entries = (entries,)
    flat = {c: {"/".join(k) for k in traverse_util.flatten_dict(dict(variables.get(c, {})))}
            for c in ("params", "batch_stats")}
    present = {p.split("/", 1)[0] for paths in flat.values() for p in paths}
    groups = [g for g in group_names(unit_names)
              if g in present or (g == "stem" and present & set(stem_units))]
    example = max(sorted(flat["params"]), key=lambda p: p.count("/"))
    frozen: dict[str, set[str]] = {"params": set(), "batch_stats": set()}
    for entry in entries:
        matches = _matcher(entry, groups, stem_units, model_name)
        hit = False
        for collection, paths in flat.items():
            found = {p for p in paths if matches(p)}
            frozen[collection] |= found
            hit = hit or bool(found)
        if not hit:
            raise UserError(
                f"train.freeze entry {entry!r} matches no parameter of {model_name} (groups: "
                f"{', '.join(groups)}; or 're:REGEX' over paths like {example!r})."
            )
    if frozen["params"] and frozen["params"] == flat["params"]:
        raise UserError(
            f"train.freeze={tuple(entries)!r} freezes every parameter of {model_name}: nothing "
            "would train. Leave at least the head out (e.g. drop 'head')."
        )
    whole_units = tuple(
        u for u in (*unit_names, "aux")
        if any(p.startswith(u + "/") for p in flat["params"])
        and all(p in frozen[c] for c in flat for p in flat[c] if p.startswith(u + "/"))
    )
    return Frozen(frozenset(frozen["params"]), frozenset(frozen["batch_stats"]), whole_units)


def _matcher(entry: str, groups: list[str], stem_units: Sequence[str], model_name: str):
    if not isinstance(entry, str) or not entry:
        raise UserError(f"train.freeze entries must be group names or 're:REGEX', got {entry!r}.")
    if entry.startswith(REGEX_PREFIX):
        try:
            pattern = re.compile(entry[len(REGEX_PREFIX):])
        except re.error as e:
            raise UserError(f"train.freeze entry {entry!r} is not a valid regex ({e}).") from e
        return lambda path: pattern.search(path) is not None
    if entry not in groups:
        raise UserError(
            f"train.freeze entry {entry!r} is not a group of {model_name}: use one of "
            f"{', '.join(groups)}, or 're:REGEX' over parameter paths."
        )
    units = tuple(stem_units) if entry == "stem" else (entry,)
    return lambda path: path.split("/", 1)[0] in units


def freeze_optimizer(tx: optax.GradientTransformation,
                     frozen: Frozen) -> optax.GradientTransformation:
    """`tx` on the trained parameters only; frozen ones get zero updates and no state."""
    if not frozen:
        return tx
    return optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()},
                                 frozen.param_labels)
