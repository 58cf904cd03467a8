"""Classify images: python -m inception_jax.predict --weights=FILE (or --checkpoint=WORKDIR) a.jpg

Prints the top-5 classes of each image (central crop, as in evaluation) by name: the names a
weights file or training run carries (an image folder's labels, the built-in dataset's
shapes), else ImageNet's for a 1000-way network, else "class i". A network with 1001 outputs
(TF-Slim's background class) has its background logit dropped. The input size is the one the
network was trained at, where known, else 299 (`--image_size` overrides it).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from typing import Any

from absl import flags

from inception_jax import cli
from inception_jax.errors import UserError

DEFAULT_IMAGE_SIZE = 299


def class_names(member: Any, num_outputs: int) -> list[str]:
    """The names of `num_outputs` classes (background dropped) of a member."""
    from inception_jax.data.class_names import imagenet_class_names

    if member.class_names and len(member.class_names) == num_outputs:
        return list(member.class_names)
    if num_outputs == 1000:
        return imagenet_class_names()
    return [f"class {i}" for i in range(num_outputs)]


def predict(member: Any, paths: list[str], image_size: int | None = None, top: int = 5):
    """Per image: [(class name, probability)] of the `top` most likely classes of a `Member`
    (`evaluation.member_from_weights` or `member_from_checkpoint`)."""
    import jax
    import numpy as np
    import tensorflow as tf

    from inception_jax.data.preprocess import eval_preprocess

    size = image_size or member.image_size or DEFAULT_IMAGE_SIZE
    member.model.check_image_size(size, "--image_size")
    images = []
    for path in paths:
        if not os.path.isfile(path):
            raise UserError(f"No image at {path}: check the path.")
        try:
            image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        except tf.errors.InvalidArgumentError as e:
            raise UserError(f"{path} is not a JPEG, PNG, GIF or BMP image.") from e
        images.append(eval_preprocess(image, size).numpy())
    logits = jax.jit(lambda v, x: member.model.apply(v, x, train=False))(
        member.variables, np.stack(images)
    )
    offset = 1 if member.num_classes == 1001 else 0
    probs = np.asarray(jax.nn.softmax(logits[:, offset:], axis=-1))
    names = class_names(member, probs.shape[1])
    results = []
    for p in probs:
        best = np.argsort(-p)[:top]
        results.append([(names[i], float(p[i])) for i in best])
    return results


@cli.friendly
def main(argv: list[str]) -> None:
    paths = cli.positional(
        argv, "python -m inception_jax.predict (--weights=FILE | --checkpoint=WORKDIR) image.jpg")
    cli.setup()
    from inception_jax.evaluation import member_from

    member = member_from(_WEIGHTS.value, _CHECKPOINT.value, _EMA.value, _STEP.value)
    for path, top in zip(paths, predict(member, paths, _SIZE.value or None, _TOP.value),
                         strict=True):
        print(path)
        for name, p in top:
            print(f"  {100 * p:6.2f}%  {name}")


if __name__ == "__main__":  # flags exist only when run as a command
    _WEIGHTS = flags.DEFINE_string("weights", None, "Weights file (import_weights, export).")
    _CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Or: a training run's workdir.")
    _STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest).")
    _EMA = flags.DEFINE_bool("ema", True, "Use a checkpoint's moving-average weights.")
    _SIZE = flags.DEFINE_integer(
        "image_size", 0, f"Input size (default: the trained size, else {DEFAULT_IMAGE_SIZE}).")
    _TOP = flags.DEFINE_integer("top", 5, "How many classes to print per image.")
    cli.run(main)
