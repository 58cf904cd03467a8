"""An image folder with damaged files among good ones, for the pipeline's and trainer's tests.

`make_damaged_folder(root)` writes root/<split>/<label>/<name>.jpg, 32x32 images of two labels
(or more, `labels=`):

- train: per label `per_label` good images, among them the odd-but-valid files ILSVRC-2012
  holds (a CMYK JPEG, a PNG named .jpg, a grayscale JPEG), plus two damaged ones:
  a/truncated.jpg (a JPEG cut right after its scan header) and b/random.jpg (random bytes);
- test: 3 good images per label plus b/empty.jpg (0 bytes).
"""

from __future__ import annotations

import io
import pathlib

import numpy as np
from PIL import Image

SIZE = 32


def _jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def _image(rng: np.random.Generator, label: int) -> Image.Image:
    colours = {0: [200, 40, 40], 1: [40, 40, 200]}  # further labels: other colours
    base = np.array(colours.get(label, [20 * label, 220 - 20 * label, 120]), np.float32)
    pixels = base + rng.normal(0, 25, (SIZE, SIZE, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def truncated_jpeg(image: Image.Image) -> bytes:
    """`image` as a JPEG cut 8 bytes into its entropy-coded data: no row decodes."""
    data = _jpeg(image)
    start_of_scan = data.index(b"\xff\xda")
    return data[: start_of_scan + 2 + int.from_bytes(data[start_of_scan + 2:][:2], "big") + 8]


def make_damaged_folder(root: pathlib.Path, per_label: int = 6, seed: int = 0,
                        labels: int = 2) -> dict:
    """Writes the folder (`labels` classes: a, b, c, ...); returns {"train": [damaged paths],
    "test": [damaged paths]}."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", per_label), ("test", 3)):
        for label, name in enumerate("abcdefghijklmnopqrstuvwxyz"[:labels]):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                image = _image(rng, label)
                data = _jpeg(image)
                if split == "train" and (label, i) == (0, 1):
                    data = _jpeg(image.convert("CMYK"))
                elif split == "train" and (label, i) == (1, 2):
                    out = io.BytesIO()
                    image.save(out, "PNG")  # a PNG disguised as a JPEG
                    data = out.getvalue()
                elif split == "train" and (label, i) == (0, 3):
                    data = _jpeg(image.convert("L"))
                (root / split / name / f"{i}.jpg").write_bytes(data)
    damaged = {
        "train": [root / "train" / "a" / "truncated.jpg", root / "train" / "b" / "random.jpg"],
        "test": [root / "test" / "b" / "empty.jpg"],
    }
    damaged["train"][0].write_bytes(truncated_jpeg(_image(rng, 0)))
    damaged["train"][1].write_bytes(rng.integers(0, 256, 700, np.uint8).tobytes())
    damaged["test"][0].write_bytes(b"")
    return {split: [str(p) for p in paths] for split, paths in damaged.items()}
