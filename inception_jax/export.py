"""Turn a training run into a file others use: our weights file, a StableHLO function, a SavedModel.

    python -m inception_jax.export --checkpoint=WORKDIR --out=model.safetensors
    python -m inception_jax.export --checkpoint=WORKDIR --format=stablehlo --out=model.stablehlo
    python -m inception_jax.export --checkpoint=WORKDIR --format=saved_model --out=model_dir

The moving-average weights of the newest checkpoint by default (`--noema`: the raw weights;
`--step=N`: another checkpoint); `--weights=FILE` exports a weights file instead of a run.
- `weights`: our `.safetensors` weights file, with the model knobs, the image size and the
  class names of the data it was trained on (`predict`, `evaluate --weights` and
  `train.init_weights` read it).
- `stablehlo`: a `jax.export` serialized function, logits from float32 images in [-1, 1] of
  shape [batch, S, S, 3] with a symbolic batch and the weights inside, that runs with jax
  alone: `jax.export.deserialize(open(f, "rb").read()).call(images)`. It is lowered for every
  platform in `--platforms` (default cpu, cuda and tpu).
- `saved_model`: a TensorFlow SavedModel (made with `jax2tf`, the converter orbax-export also
  uses, without the extra dependency) whose `serving_default` signature takes uint8 images
  [batch, H, W, 3] of any size and returns `logits` and `probabilities`; the evaluation
  preprocessing (central crop, resize to S, scale to [-1, 1]) runs inside it, in TensorFlow.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import functools
import json
import logging
import time
from typing import Any

from absl import flags

from inception_jax import cli
from inception_jax.atomic import write_atomically
from inception_jax.errors import UserError

log = logging.getLogger(__name__)

FORMATS = ("weights", "stablehlo", "saved_model")
PLATFORMS = ("cpu", "cuda", "tpu")


def check_format(fmt: str, platforms: list[str]) -> None:
    """UserError for an unknown format or platform (before anything is read)."""
    if fmt not in FORMATS:
        raise UserError(f"--format={fmt!r} is not one of {', '.join(FORMATS)}.")
    unknown = [p for p in platforms if p not in PLATFORMS]
    if unknown or not platforms:
        raise UserError(
            f"--platforms={','.join(platforms)!r}: name one or more of {', '.join(PLATFORMS)}."
        )


def serving_model(member: Any, platforms: list[str]) -> Any:
    """The member's network as it should run where the export will: XLA's convolutions unless
    the export is for CPU alone (the CPU rewrite is a speed choice; the parameters are the
    same)."""
    if list(platforms) == ["cpu"]:
        return member.model.clone(platform="cpu")
    return member.model.clone(conv_impl="xla", platform=None)


def logits_function(member: Any, platforms: list[str]) -> Any:
    """(variables, images [B, S, S, 3] float32 in [-1, 1]) → logits [B, C]."""
    model = serving_model(member, platforms)
    return lambda variables, images: model.apply(variables, images, train=False)


def export_stablehlo(member: Any, image_size: int, out: str, platforms: list[str]) -> None:
    """Writes the serialized `jax.export` of the member's logits (symbolic batch) to `out`."""
    import jax

    (batch,) = jax.export.symbolic_shape("batch")
    spec = jax.ShapeDtypeStruct((batch, image_size, image_size, 3), jax.numpy.float32)
    logits = functools.partial(logits_function(member, platforms), member.variables)
    exported = jax.export.export(jax.jit(logits), platforms=tuple(platforms))(spec)
    data = exported.serialize()

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    write_atomically(out, write)


def export_saved_model(member: Any, image_size: int, out: str, platforms: list[str]) -> None:
    """Writes a SavedModel whose serving signature takes uint8 images of any size."""
    import jax
    import tensorflow as tf
    from jax.experimental import jax2tf

    from inception_jax.data.preprocess import eval_preprocess

    tf_logits = jax2tf.convert(
        logits_function(member, platforms),
        polymorphic_shapes=[None, f"(b, {image_size}, {image_size}, 3)"],
        native_serialization_platforms=tuple(platforms),
        with_gradient=False,
    )
    module = tf.Module()
    # Variables, not constants: the weights are stored once, beside the graph.
    module.variables_tree = tf.nest.map_structure(
        tf.Variable, jax.tree.map(lambda a: tf.constant(a), member.variables)
    )
    spec = tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")

    @tf.function(input_signature=[spec], autograph=False)
    def serve(images):
        crops = tf.map_fn(lambda im: eval_preprocess(im, image_size), images,
                          fn_output_signature=tf.TensorSpec([image_size, image_size, 3],
                                                            tf.float32))
        logits = tf_logits(module.variables_tree, crops)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits, axis=-1)}

    module.serve = serve

    def write(tmp: str) -> None:
        tf.saved_model.save(module, tmp, signatures={"serving_default": serve})
        with open(os.path.join(tmp, "inception_jax.json"), "w") as f:
            json.dump({"model": member.model_name, "image_size": image_size,
                       "class_names": list(member.class_names or ())}, f, indent=1)

    write_atomically(out, write)


def export(source: Any, fmt: str, out: str, platforms: list[str],
           image_size: int | None = None) -> dict[str, Any]:
    """Exports a `Member` (see `evaluation.py`) as `fmt` to `out`; returns what was written."""
    from inception_jax.models import knobs_of
    from inception_jax.weights import save_weights

    size = image_size or source.image_size or source.model.min_input_size
    source.model.check_image_size(size, "--image_size")
    start = time.perf_counter()
    if fmt == "weights":
        save_weights(out, source.variables, source.model_name, knobs_of(source.model),
                     source=source.source, image_size=size, class_names=source.class_names)
    elif fmt == "stablehlo":
        export_stablehlo(source, size, out, platforms)
    else:
        export_saved_model(source, size, out, platforms)
    return {"format": fmt, "out": out, "image_size": size, "bytes": _size_of(out),
            "seconds": time.perf_counter() - start}


def _size_of(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, f))
               for root, _, files in os.walk(path) for f in files)


@cli.friendly
def main(argv: list[str]) -> None:
    del argv
    cli.setup()
    platforms = [p for p in _PLATFORMS.value.split(",") if p]
    check_format(_FORMAT.value, platforms)
    from inception_jax.evaluation import member_from

    source = member_from(_WEIGHTS.value, _CHECKPOINT.value, _EMA.value, _STEP.value)
    result = export(source, _FORMAT.value, _OUT.value, platforms, _SIZE.value or None)
    print(f"{source.model_name} ({source.source}) -> {result['out']}: {result['format']}, "
          f"{result['image_size']}x{result['image_size']} inputs, "
          f"{result['bytes'] / 2**20:.1f} MiB, {result['seconds']:.1f} s")


if __name__ == "__main__":  # flags exist only when run as a command
    _CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Training workdir to export.")
    _WEIGHTS = flags.DEFINE_string("weights", None, "Or: a weights file to export.")
    _STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest).")
    _EMA = flags.DEFINE_bool("ema", True, "Export a checkpoint's moving-average weights.")
    _FORMAT = flags.DEFINE_string("format", "weights", f"One of {', '.join(FORMATS)}.")
    _OUT = flags.DEFINE_string("out", None, "The file (or, for saved_model, folder) to write.")
    _SIZE = flags.DEFINE_integer(
        "image_size", 0, "Input size (default: the size the run trained at).")
    _PLATFORMS = flags.DEFINE_string(
        "platforms", ",".join(PLATFORMS),
        "stablehlo/saved_model: platforms to lower for (comma-separated: cpu, cuda, tpu).")
    flags.mark_flags_as_required(["out"])
    cli.run(main)
