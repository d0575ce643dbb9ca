"""Splits, normalisation and the Dataset class on the synthetic GTSRB (32 px)."""

from __future__ import annotations

import pytest
import torch

from stn_gtsrb import data
from stn_gtsrb.errors import StnError
from synthetic_gtsrb import FRAMES, TEST_COUNT, TRAIN_COUNT, VAL_COUNT


def test_validation_split_holds_out_one_whole_track_per_class(official):
    val = data.select_split(official, "val", val_seed=1)
    rest = data.select_split(official, "train_without_val", val_seed=1)
    assert len(val) + len(rest) == TRAIN_COUNT
    assert len(val) == VAL_COUNT and len(rest) == TRAIN_COUNT - VAL_COUNT  # every track has FRAMES frames
    assert set(val.tracks.tolist()).isdisjoint(rest.tracks.tolist())
    per_class = {c: val.tracks[val.labels == c].unique().tolist() for c in range(43)}
    assert all(len(tracks) == 1 for tracks in per_class.values())
    assert sorted(val.frames[val.tracks == val.tracks[0]].tolist()) == list(range(FRAMES))


def test_validation_split_is_seeded(official):
    def tracks(seed):
        return data.select_split(official, "val", val_seed=seed).tracks.unique().tolist()

    assert tracks(1) == tracks(1)
    assert tracks(1) != tracks(2)


def test_global_normalisation_gives_zero_mean_unit_std_per_channel(official):
    images = official["train"].images
    normalizer = data.fit_normalizer(images, per_channel=True, local=False)
    x = normalizer(images)
    assert x.mean((0, 2, 3)).abs().max() < 1e-3
    assert (x.std((0, 2, 3)) - 1).abs().max() < 1e-3
    scalar = data.fit_normalizer(images, local=False)
    assert scalar.mean.shape == () and abs(scalar(images).mean().item()) < 1e-3


def test_local_normalisation_keeps_shape_and_stays_finite(official):
    images = official["test"].images[:300]
    x = data.fit_normalizer(images, local=True)(images)
    assert x.shape == images.shape and x.dtype == torch.float32
    assert torch.isfinite(x).all()
    assert x.std() > 0.5  # it normalises rather than flattening the images


def test_no_global_norm_is_identity_on_unit_scale(official):
    images = official["test"].images[:10]
    x = data.fit_normalizer(images, global_norm=False, local=False)(images)
    assert torch.equal(x, images.float() / 255)


def test_dataset_class_works_with_a_dataloader(data_env):
    dataset = data.GTSRB(split="test", size=32, transform=lambda img: img.float() / 255)
    assert len(dataset) == TEST_COUNT
    images, labels = next(iter(torch.utils.data.DataLoader(dataset, batch_size=16, shuffle=True)))
    assert images.shape == (16, 3, 32, 32) and images.max() <= 1 and labels.dtype == torch.int64


def test_dataset_class_rejects_unknown_split(data_env):
    with pytest.raises(StnError, match="unknown split"):
        data.GTSRB(split="training")


def test_dataset_class_not_found_says_how_to_prepare(tmp_path, monkeypatch):
    monkeypatch.setenv("STN_GTSRB_SOURCE", "http://127.0.0.1:9/")
    with pytest.raises(ValueError, match="download=True"):
        data.GTSRB(root=tmp_path, split="train")
