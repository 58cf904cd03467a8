"""Damaged images: "error" names the file in one line; "skip" lists it, keeps batches whole
and the stream deterministic and resumable (image folders and TFDS datasets alike)."""

import itertools
import logging
import pathlib

import ml_collections
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from inception_jax.data import pipeline
from inception_jax.data.bad_images import BadImageError, skipped_list_path
from inception_jax.errors import UserError
from tests.damaged_folder import make_damaged_folder

TRUNCATED = "jpeg::Uncompress failed. Invalid JPEG data or crop window."
UNKNOWN = "Unknown image file format. One of JPEG, JPEG XL, PNG, GIF, BMP, WebP required."


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    return root, make_damaged_folder(root)


def folder_cfg(root, on_bad_image):
    return ml_collections.ConfigDict(
        dict(name="image_folder", folder=str(root), data_dir=None, image_size=16,
             train_split="train", eval_split="test", shuffle_buffer=64, color_distortion=False,
             color_distortion_mode="fast",
             min_crop_area=0.3, on_bad_image=on_bad_image)
    )


def _take(stream, n):
    return list(itertools.islice(stream, n))


def _reasons(list_path):
    lines = list_path.read_text().splitlines()
    return dict(line.split("\t") for line in lines), len(lines)


def test_error_names_the_damaged_file_in_one_line(folder):
    root, damaged = folder
    with pytest.raises(BadImageError) as raised:
        _take(pipeline.train_batches(folder_cfg(root, "error"), 7, seed=0), 2)
    message = str(raised.value)
    assert "\n" not in message and isinstance(raised.value, UserError)
    expected = {damaged["train"][0]: TRUNCATED, damaged["train"][1]: UNKNOWN}
    named = [path for path in expected if f"Damaged image {path}: {expected[path]}" in message]
    assert len(named) == 1, message
    assert message.endswith("or set --config.data.on_bad_image=skip to leave damaged images out.")


def test_skip_lists_each_file_once_and_keeps_batches_whole(folder, tmp_path, caplog):
    root, damaged = folder
    listed = tmp_path / "skipped_images.txt"
    with caplog.at_level(logging.WARNING):
        stream = pipeline.train_batches(folder_cfg(root, "skip"), 7, seed=0,
                                        skipped_list=str(listed))
        batches = _take(stream, 6)  # 3 epochs of 2 batches: all 14 records each epoch
    assert (stream.num_skipped, stream.num_listed) == (6, 2)  # 2 files met in 3 epochs
    reasons, lines = _reasons(listed)
    assert lines == 2 and reasons == {damaged["train"][0]: TRUNCATED, damaged["train"][1]: UNKNOWN}
    warnings = [r.getMessage() for r in caplog.records if "Skipping" in r.getMessage()]
    assert sorted(warnings) == sorted(f"Skipping damaged image {p}: {reasons[p]}" for p in reasons)
    for epoch in range(3):
        duplicates = 0
        for batch in batches[2 * epoch:2 * epoch + 2]:
            assert batch["image"].shape == (7, 16, 16, 3) and set(batch) == {"image", "label"}
            assert np.isfinite(batch["image"]).all()
            rows = np.unique(batch["image"].reshape(7, -1), axis=0)
            duplicates += 7 - len(rows)
            for i in range(7):  # a filled-in example keeps its source's label
                same = (batch["image"] == batch["image"][i]).all(axis=(1, 2, 3))
                assert (batch["label"][same] == batch["label"][i]).all()
        assert duplicates == 2  # each damaged record's place holds a copy of a good one


def test_skip_is_deterministic_and_resumes_at_any_step(folder, tmp_path):
    root, _ = folder
    cfg = folder_cfg(root, "skip")
    listed = str(tmp_path / "skipped_images.txt")
    full = _take(pipeline.train_batches(cfg, 7, seed=3, skipped_list=listed), 5)
    again = _take(pipeline.train_batches(cfg, 7, seed=3), 5)
    for step in (1, 2, 3):
        resumed = pipeline.train_batches(cfg, 7, seed=3, start_step=step, skipped_list=listed)
        assert (resumed.num_skipped, resumed.num_listed) == (0, 2)  # the list is read back
        for a, b in zip(full[step:], _take(resumed, 5 - step), strict=True):
            assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["label"], b["label"])
    for a, b in zip(full, again, strict=True):
        assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["label"], b["label"])
    assert _reasons(tmp_path / "skipped_images.txt")[1] == 2  # no file listed twice


def test_eval_follows_the_same_setting(folder, tmp_path):
    root, damaged = folder
    with pytest.raises(BadImageError, match=f"^Damaged image {damaged['test'][0]}: the file is "
                       "empty. Remove or replace it"):
        list(pipeline.eval_batches(folder_cfg(root, "error"), 4))
    listed = tmp_path / "skipped_images.txt"
    stream = pipeline.eval_batches(folder_cfg(root, "skip"), 4, skipped_list=str(listed))
    batches = list(stream)
    masks = np.concatenate([b["mask"] for b in batches])
    assert len(batches) == 2 and masks.sum() == 6.0 and masks.size == 8  # 7 records, 1 out
    assert (stream.num_skipped, stream.num_listed) == (1, 1)
    assert _reasons(listed)[0] == {damaged["test"][0]: "the file is empty"}


def test_unknown_setting_is_refused(folder):
    with pytest.raises(UserError, match="data.on_bad_image='ignore': use 'error'"):
        pipeline.train_batches(folder_cfg(folder[0], "ignore"), 7, seed=0)


def test_damaged_tfds_record_is_named_by_split_and_index(tmp_path):
    rng = np.random.default_rng(0)
    good = tf.io.encode_jpeg(rng.integers(0, 256, (20, 20, 3), np.uint8)).numpy()
    images = [good] * 3 + [b"\xff\xd8\xff not really a JPEG"] + [good] * 4

    def as_dataset(self, split, decoders=None, read_config=None, **kwargs):
        return tf.data.Dataset.from_tensor_slices(
            {"image": images, "label": np.arange(8) % 5,
             "file_name": [f"n0{i}_{i}.JPEG" for i in range(8)]}
        )

    cfg = folder_cfg(tmp_path, "error")
    cfg.update(dict(name="imagenet2012", data_dir=str(tmp_path), eval_split="validation"))
    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        with pytest.raises(BadImageError, match=r"^Damaged image record 3 of imagenet2012 split "
                           r"'train' \(n03_3.JPEG\): jpeg::Uncompress failed"):
            next(pipeline.train_batches(cfg, 8, seed=0))
        cfg.on_bad_image = "skip"
        listed = tmp_path / skipped_list_path("", 1)
        batch = next(pipeline.train_batches(cfg, 8, seed=0, skipped_list=str(listed)))
        evaluated = next(pipeline.eval_batches(cfg, 8, skipped_list=str(listed)))
    assert batch["image"].shape == (8, 16, 16, 3)
    assert evaluated["mask"].tolist() == [1.0] * 3 + [0.0] + [1.0] * 4
    assert listed.name == "skipped_images.txt.process1"
    assert sorted(_reasons(listed)[0]) == [
        "record 3 of imagenet2012 split 'train' (n03_3.JPEG)",
        "record 3 of imagenet2012 split 'validation' (n03_3.JPEG)",
    ]


def test_odd_but_valid_images_decode_alike_in_both_modes(tmp_path):
    """CMYK JPEGs, PNGs named .jpg and grayscale JPEGs (as in ILSVRC-2012) are not damaged,
    and the guarded decoding of "skip" gives the pixels of the unguarded one."""
    damaged = make_damaged_folder(tmp_path / "images")
    for path in damaged["train"] + damaged["test"]:
        pathlib.Path(path).unlink()
    listed = tmp_path / "skipped_images.txt"
    error = _take(pipeline.train_batches(folder_cfg(tmp_path / "images", "error"), 6, seed=1), 4)
    skip = pipeline.train_batches(folder_cfg(tmp_path / "images", "skip"), 6, seed=1,
                                  skipped_list=str(listed))
    for a, b in zip(error, _take(skip, 4), strict=True):
        assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["label"], b["label"])
    assert skip.num_skipped == 0 and not listed.exists()


def test_a_training_batch_of_only_damaged_images_stops_the_run(tmp_path):
    for label in ("a", "b"):
        (tmp_path / "train" / label).mkdir(parents=True)
        for i in range(2):
            (tmp_path / "train" / label / f"{i}.jpg").write_bytes(b"not an image")
    with pytest.raises(BadImageError, match="^All 4 images of a training batch are damaged"):
        next(pipeline.train_batches(folder_cfg(tmp_path, "skip"), 4, seed=0))
