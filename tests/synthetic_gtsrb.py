"""A small GTSRB in the official layout, so that the data tests run without the real archives.

``write_archives(folder)`` writes the three official archive names, with the
official inner layout (per-class ``GT-000CC.csv`` files with tracks, frames and
ROIs; the test images with ``GT-final_test.test.csv``; the labels in
``GT-final_test.csv``) and a ``SHA256SUMS`` file. Every class has ``TRACKS``
tracks of ``FRAMES`` frames and ``TEST_PER_CLASS`` test images. An image is
its class's pattern (a seeded 4×4 grid of colours) seen at a size that grows
along the track, slightly shifted, with noise: easy to learn, never identical.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES, TRACKS, FRAMES, TEST_PER_CLASS = 43, 6, 10, 6
TRAIN_COUNT = CLASSES * TRACKS * FRAMES  # 2,580
VAL_COUNT = CLASSES * FRAMES  # one track per class: 430
TEST_COUNT = CLASSES * TEST_PER_CLASS  # 258
HEADER = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"
NAMES = ("GTSRB_Final_Training_Images.zip", "GTSRB_Final_Test_Images.zip", "GTSRB_Final_Test_GT.zip")


def sign(class_id: int, width: int, height: int, rng: np.random.Generator) -> tuple[bytes, list[int]]:
    """A PPM image of class ``class_id`` and its ROI ``[x1, y1, x2, y2]`` in its own pixels."""
    pattern = np.random.default_rng(1000 + class_id).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    margin_x, margin_y = width // 8, height // 8
    inner = Image.fromarray(pattern).resize((width - 2 * margin_x, height - 2 * margin_y), Image.NEAREST)
    canvas = np.full((height, width, 3), rng.integers(60, 200), np.uint8)
    shift_x, shift_y = rng.integers(-margin_x // 2, margin_x // 2 + 1, 2)
    x1, y1 = margin_x + shift_x, margin_y + shift_y
    canvas[y1:y1 + inner.height, x1:x1 + inner.width] = np.asarray(inner)
    noisy = np.clip(canvas.astype(np.int16) + rng.integers(-12, 13, canvas.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noisy).save(buffer, format="PPM")
    return buffer.getvalue(), [int(x1), int(y1), int(x1 + inner.width - 1), int(y1 + inner.height - 1)]


def _row(name: str, width: int, height: int, roi: list[int], class_id: int | None) -> str:
    return ";".join(map(str, [name, width, height, *roi, *([] if class_id is None else [class_id])]))


def _training_zip(path: Path, rng: np.random.Generator) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for class_id in range(CLASSES):
            folder = f"GTSRB/Final_Training/Images/{class_id:05d}"
            rows = [HEADER]
            for track in range(TRACKS):
                for frame in range(FRAMES):
                    width, height = 20 + 2 * frame, 20 + 2 * frame + frame % 3  # grows; not always square
                    data, roi = sign(class_id, width, height, rng)
                    name = f"{track:05d}_{frame:05d}.ppm"
                    archive.writestr(f"{folder}/{name}", data)
                    rows.append(_row(name, width, height, roi, class_id))
            archive.writestr(f"{folder}/GT-{class_id:05d}.csv", "\n".join(rows) + "\n")


def _test_zips(images_path: Path, labels_path: Path, rng: np.random.Generator) -> None:
    unlabelled, labelled = [HEADER.rsplit(";", 1)[0]], [HEADER]
    with zipfile.ZipFile(images_path, "w") as archive:
        for index in range(TEST_COUNT):
            class_id = index % CLASSES
            width, height = int(rng.integers(20, 40)), int(rng.integers(20, 40))
            data, roi = sign(class_id, width, height, rng)
            name = f"{index:05d}.ppm"
            archive.writestr(f"GTSRB/Final_Test/Images/{name}", data)
            unlabelled.append(_row(name, width, height, roi, None))
            labelled.append(_row(name, width, height, roi, class_id))
        archive.writestr("GTSRB/Final_Test/Images/GT-final_test.test.csv", "\n".join(unlabelled) + "\n")
    with zipfile.ZipFile(labels_path, "w") as archive:
        archive.writestr("GT-final_test.csv", "\n".join(labelled) + "\n")


def write_archives(folder: Path, seed: int = 0) -> Path:
    """Write the three archives and SHA256SUMS into ``folder``; return it."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    _training_zip(folder / NAMES[0], rng)
    _test_zips(folder / NAMES[1], folder / NAMES[2], rng)
    sums = [f"{hashlib.sha256((folder / name).read_bytes()).hexdigest()}  {name}" for name in NAMES]
    (folder / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    return folder
