"""Classify images: python -m inception_jax.predict --weights=FILE image.jpg [...].

Prints the top-5 ImageNet classes of each image (central crop, as in evaluation). A network
with 1001 outputs (TF-Slim's background class) has its background logit dropped; one trained
on another dataset prints class indices.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import flags

from inception_jax import cli
from inception_jax.errors import UserError


def predict(weights: str, paths: list[str], image_size: int = 299, top: int = 5):
    """Per image: [(class name, probability)] of the `top` most likely classes."""
    import jax
    import numpy as np
    import tensorflow as tf

    from inception_jax.data.class_names import imagenet_class_names
    from inception_jax.data.preprocess import eval_preprocess
    from inception_jax.evaluation import member_from_weights

    member = member_from_weights(weights)
    member.model.check_image_size(image_size, "--image_size")
    images = []
    for path in paths:
        if not os.path.isfile(path):
            raise UserError(f"No image at {path}: check the path.")
        try:
            image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        except tf.errors.InvalidArgumentError as e:
            raise UserError(f"{path} is not a JPEG, PNG, GIF or BMP image.") from e
        images.append(eval_preprocess(image, image_size).numpy())
    logits = jax.jit(lambda v, x: member.model.apply(v, x, train=False))(
        member.variables, np.stack(images)
    )
    offset = 1 if member.num_classes == 1001 else 0
    probs = np.asarray(jax.nn.softmax(logits[:, offset:], axis=-1))
    names = imagenet_class_names() if probs.shape[1] == 1000 else None
    results = []
    for p in probs:
        best = np.argsort(-p)[:top]
        results.append([(names[i] if names else f"class {i}", float(p[i])) for i in best])
    return results


@cli.friendly
def main(argv: list[str]) -> None:
    paths = cli.positional(argv, "python -m inception_jax.predict --weights=FILE image.jpg ...")
    cli.setup()
    for path, top in zip(paths, predict(_WEIGHTS.value, paths, _SIZE.value, _TOP.value),
                         strict=True):
        print(path)
        for name, p in top:
            print(f"  {100 * p:6.2f}%  {name}")


if __name__ == "__main__":  # flags exist only when run as a command
    _WEIGHTS = flags.DEFINE_string("weights", None, "Weights file (import_weights output).")
    _SIZE = flags.DEFINE_integer("image_size", 299, "Input size the network sees.")
    _TOP = flags.DEFINE_integer("top", 5, "How many classes to print per image.")
    flags.mark_flags_as_required(["weights"])
    cli.run(main)
