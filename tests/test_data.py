"""The built-in dataset, preprocessing and the deterministic, resumable input pipeline."""

import ml_collections
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from inception_jax.data import pipeline
from inception_jax.data.preprocess import (
    CROP_MAX_ATTEMPTS,
    crop_box,
    decode_train_crop,
    distort_color,
    eval_preprocess,
    finish_train_crop,
    train_crop,
    train_preprocess,
)
from inception_jax.data.shapes_dataset import CLASSES


def data_cfg(tmp_path, **kw):
    c = ml_collections.ConfigDict(
        dict(name="inception_shapes", data_dir=str(tmp_path), image_size=24, train_split="train",
             eval_split="test", shuffle_buffer=64, color_distortion=True,
             color_distortion_mode="fast", min_crop_area=0.3, folder="", on_bad_image="error",
             builder=dict(image_size=20, num_train=40, num_test=13, seed=3))
    )
    c.update(kw)
    return c


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


def test_shapes_dataset_is_deterministic_and_balanced(shapes_dir, tmp_path):
    info = pipeline.dataset_info(data_cfg(shapes_dir))
    assert (info.num_train_examples, info.num_eval_examples, info.num_classes) == (40, 13, 10)
    assert len(CLASSES) == 10

    def images(directory):
        builder = pipeline.get_builder(data_cfg(directory))
        ds = tfds.as_numpy(builder.as_dataset(split="train", shuffle_files=False))
        return [(ex["image"], ex["label"]) for ex in ds]

    first, second = images(shapes_dir), images(tmp_path)
    assert all(np.array_equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(first, second,
                                                                         strict=True))
    labels = np.bincount([label for _, label in first], minlength=10)
    assert labels.tolist() == [4] * 10
    assert first[0][0].shape == (20, 20, 3) and first[0][0].dtype == np.uint8


def test_train_preprocess_is_a_pure_function_of_the_seed():
    image = tf.constant(np.random.default_rng(0).integers(0, 256, (40, 50, 3)), tf.uint8)
    a = train_preprocess(image, 32, tf.constant([1, 2], tf.int64), "full").numpy()
    b = train_preprocess(image, 32, tf.constant([1, 2], tf.int64), "full").numpy()
    c = train_preprocess(image, 32, tf.constant([1, 3], tf.int64), "full").numpy()
    assert a.shape == (32, 32, 3) and a.dtype == np.float32
    assert a.min() >= -1.0 and a.max() <= 1.0
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def _slim_ops(image, names, seed):
    """slim's colour operations with its deltas, each drawn from its own seed (as ours are)."""
    seeds = tf.random.experimental.stateless_split(seed, 4)
    ops = {
        "brightness": lambda x: tf.image.stateless_random_brightness(x, 32.0 / 255.0, seeds[0]),
        "saturation": lambda x: tf.image.stateless_random_saturation(x, 0.5, 1.5, seeds[1]),
        "hue": lambda x: tf.image.stateless_random_hue(x, 0.2, seeds[2]),
        "contrast": lambda x: tf.image.stateless_random_contrast(x, 0.5, 1.5, seeds[3]),
    }
    for name in names:
        image = ops[name](image)
    return tf.clip_by_value(image, 0.0, 1.0).numpy()


def test_colour_distortion_follows_slim_fast_and_full_modes():
    image = tf.constant(np.random.default_rng(1).uniform(0, 1, (16, 16, 3)), tf.float32)
    # Fast (slim's default): brightness then saturation, no hue, no contrast.
    seed = tf.constant([4, 2], tf.int64)
    fast = distort_color(image, seed, "fast").numpy()
    np.testing.assert_allclose(fast, _slim_ops(image, ["brightness", "saturation"], seed),
                               atol=1e-6)
    assert not np.allclose(fast, _slim_ops(image, ["saturation", "brightness"], seed), atol=1e-4)
    # Full: one of slim's four orders of all four operations, drawn per image.
    orders = [("brightness", "saturation", "hue", "contrast"),
              ("saturation", "brightness", "contrast", "hue"),
              ("contrast", "hue", "brightness", "saturation"),
              ("hue", "saturation", "contrast", "brightness")]
    seen = set()
    for s in range(24):
        seed = tf.constant([s, 9], tf.int64)
        order_seed, ops_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        drawn = int(tf.random.stateless_uniform([], order_seed, 0, 4, tf.int32))
        full = distort_color(image, seed, "full").numpy()
        np.testing.assert_allclose(full, _slim_ops(image, orders[drawn], ops_seed), atol=1e-6)
        seen.add(drawn)
    assert seen == {0, 1, 2, 3}
    # The orders give different images (brightness before or after saturation and hue).
    assert not np.allclose(_slim_ops(image, orders[0], ops_seed),
                           _slim_ops(image, orders[1], ops_seed), atol=1e-3)
    with pytest.raises(ValueError, match="unknown colour distortion mode"):
        distort_color(image, seed, "slim")


def test_crop_box_makes_slims_100_attempts():
    assert CROP_MAX_ATTEMPTS == 100

    def tf_box(shape, seed, attempts):
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            shape, tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]), seed=seed,
            min_object_covered=0.1, aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.05, 1.0),
            max_attempts=attempts, use_image_if_no_bounding_boxes=True)
        return np.concatenate([begin[:2], size[:2]])

    # A 1:10 strip: a box must cover >= 10% of it at aspect <= 4/3, so few sampled boxes fit
    # and 10 attempts often give up (the whole image).
    shape = tf.constant([30, 300, 3])
    whole = np.array([0, 0, 30, 300])
    ours, with_10 = [], []
    for s in range(30):
        seed = tf.constant([s, 0], tf.int64)
        box = crop_box(shape, seed).numpy()
        assert np.array_equal(box, tf_box(shape, seed, 100)), s
        ours.append(np.array_equal(box, whole))
        with_10.append(np.array_equal(tf_box(shape, seed, 10), whole))
    assert sum(ours) < sum(with_10), (sum(ours), sum(with_10))


def _encodings(image):
    """The same image as the JPEG kinds ImageNet holds (4:2:0 from TF, 4:2:2, 4:4:4, CMYK,
    grayscale) and as a PNG."""
    import io

    from PIL import Image

    def pil(img, fmt, **kw):
        out = io.BytesIO()
        img.save(out, fmt, **kw)
        return out.getvalue()

    img = Image.fromarray(image)
    return {"420": tf.io.encode_jpeg(image, quality=90).numpy(),
            "422": pil(img, "JPEG", quality=90, subsampling=1),
            "444": pil(img, "JPEG", quality=90, subsampling=0),
            "cmyk": pil(img.convert("CMYK"), "JPEG"), "gray": pil(img.convert("L"), "JPEG"),
            "png": pil(img, "PNG")}


def test_decoding_only_the_crop_gives_the_pixels_of_a_whole_decode():
    rng = np.random.default_rng(0)
    image = np.clip(rng.normal(128, 60, (75, 100, 3)), 0, 255).astype(np.uint8)
    bare_differs = 0
    for kind, encoded in _encodings(image).items():
        whole = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        for s in range(12):
            seed = tf.constant([s, 5], tf.int64)
            crop = decode_train_crop(encoded, seed, (0.05, 1.0)).numpy()
            expected = train_crop(whole, seed, (0.05, 1.0)).numpy()
            assert crop.shape == expected.shape and crop.shape[2] == 3, kind
            assert np.array_equal(crop, expected), (kind, s)
            if kind == "420":  # the bare box misses chroma beyond its edges (see preprocess)
                box_seed = tf.random.experimental.stateless_split(seed, 3)[0]
                box = crop_box(tf.image.extract_jpeg_shape(encoded), box_seed, (0.05, 1.0))
                bare = tf.image.decode_and_crop_jpeg(encoded, box, channels=3)
                bare_differs += not np.array_equal(bare.numpy(), expected)
        out = finish_train_crop(decode_train_crop(encoded, seed), 32, seed, "fast").numpy()
        assert np.array_equal(out, train_preprocess(whole, 32, seed, "fast").numpy()), kind
    assert bare_differs >= 6  # the margin matters for most boxes


def test_eval_preprocess_takes_the_central_87_5_percent():
    image = np.zeros((64, 64, 3), np.uint8)
    image[4:60, 4:60] = 255  # the central 56x56 = 87.5% is white, the 4-pixel border black
    out = eval_preprocess(tf.constant(image), 56).numpy()
    assert out.shape == (56, 56, 3)
    np.testing.assert_allclose(out, 1.0)  # no black border left after the crop
    corners = eval_preprocess(tf.constant(image), 56, crops="10").numpy()
    assert corners.shape == (10, 56, 56, 3)
    assert corners[0, 0, 0, 0] == -1.0 and corners[0, -1, -1, 0] == 1.0  # top-left corner crop


def _take(iterator, n):
    return [next(iterator) for _ in range(n)]


def test_resumed_stream_equals_the_uninterrupted_one_across_an_epoch(shapes_dir):
    cfg = data_cfg(shapes_dir)
    full = _take(pipeline.train_batches(cfg, 16, seed=7), 6)  # 2 batches per epoch
    resumed = _take(pipeline.train_batches(cfg, 16, seed=7, start_step=3), 3)
    for a, b in zip(full[3:], resumed, strict=True):
        assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["label"], b["label"])
    assert full[0]["image"].shape == (16, 24, 24, 3) and full[0]["label"].dtype == np.int32
    assert not np.array_equal(full[0]["label"], full[2]["label"])  # epochs reshuffle
    other_seed = _take(pipeline.train_batches(cfg, 16, seed=8), 1)
    assert not np.array_equal(other_seed[0]["image"], full[0]["image"])


def test_eval_batches_cover_each_example_once_with_masks(shapes_dir):
    batches = list(pipeline.eval_batches(data_cfg(shapes_dir), 8))
    masks = np.concatenate([b["mask"] for b in batches])
    assert len(batches) == 2 and masks.tolist() == [1.0] * 13 + [0.0] * 3
    labels = np.concatenate([b["label"] for b in batches])[:13]
    assert sorted(labels.tolist()) == sorted(i % 10 for i in range(13))


def test_records_are_numbered_by_their_index_in_the_split(shapes_dir, tmp_path):
    builder = pipeline.get_builder(data_cfg(shapes_dir))
    ds, size = pipeline.process_records(builder, "train", True, process=(1, 2))
    assert size == 20 and [int(ex["record"]) for ex in ds] == list(range(20, 40))
    folder = tmp_path / "train" / "a"
    folder.mkdir(parents=True)
    for i in range(5):
        tf.io.write_file(str(folder / f"{i}.png"), tf.io.encode_png(tf.zeros([4, 4, 3], tf.uint8)))
    images = tfds.folder_dataset.ImageFolder(str(tmp_path))
    ds, size = pipeline.process_records(images, "train", False, process=(1, 2))
    assert size == 2 and [int(ex["record"]) for ex in ds] == [1, 3]


def test_unknown_dataset_lists_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match="Known datasets: inception_shapes, imagenet2012"):
        pipeline.dataset_info(data_cfg(tmp_path, name="cifar"))


def test_imagenet_not_prepared_says_how_to_prepare_it(tmp_path):
    with pytest.raises(pipeline.DatasetNotPreparedError, match="downloads/manual"):
        pipeline.dataset_info(data_cfg(tmp_path, name="imagenet2012", eval_split="validation"))


def test_pipeline_runs_on_mocked_imagenet(tmp_path):
    cfg = data_cfg(tmp_path, name="imagenet2012", eval_split="validation", image_size=32)
    with tfds.testing.mock_data(num_examples=16):
        info = pipeline.dataset_info(cfg)
        batch = next(pipeline.train_batches(cfg, 4, seed=0))
    assert info.num_classes == 1000
    assert batch["image"].shape == (4, 32, 32, 3)
    assert batch["image"].min() >= -1.0 and batch["image"].max() <= 1.0


def test_image_folder(tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        for label in ("cat", "dog"):
            (tmp_path / split / label).mkdir(parents=True)
            for i in range(4):
                color = (255, 0, 0) if label == "cat" else (0, 0, 255)
                Image.new("RGB", (30, 30), color).save(tmp_path / split / label / f"{i}.jpg")
    cfg = data_cfg(tmp_path, name="image_folder", folder=str(tmp_path))
    info = pipeline.dataset_info(cfg)
    assert (info.num_train_examples, info.num_classes) == (8, 2)
    batch = next(pipeline.train_batches(cfg, 4, seed=0))
    assert batch["image"].shape == (4, 24, 24, 3)
    with pytest.raises(pipeline.DatasetNotPreparedError, match="not a directory"):
        pipeline.dataset_info(data_cfg(tmp_path, name="image_folder", folder="/nonexistent"))
