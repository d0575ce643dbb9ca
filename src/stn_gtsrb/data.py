"""GTSRB as ready tensors: decoding, cache, splits, normalisation, Dataset.

Pipeline::

    archives (archives.py) --decode--> uint8 tensors --cache--> DATA_DIR/gtsrb-<size>px.pt
    load_split("train"|"val"|"train_without_val"|"test") --> GTSRBTensors
    fit_normalizer(train) + normalize(images) --> float tensors for the trainer

Images are read straight from the zip archives (nothing is extracted), the
whole image is resized to ``size × size`` (bilinear, aspect ratio not kept, as
in the original work). The cache holds both official splits and is keyed by the
archives' hashes, the size and ``FORMAT_VERSION``; a stale or unreadable cache
is rebuilt, and written atomically, so a failed rebuild never hurts a good one.
"""

from __future__ import annotations

import csv
import io
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image, ImageOps

from .archives import ARCHIVES, DataLocation, expected_hashes, fetch_archives, remember_source, resolve_location
from .classes import NUM_CLASSES
from .errors import StnError
from .fileio import save_torch
from .normalization import contrastive_normalize

FORMAT_VERSION = 1
SPLITS = ("train", "val", "train_without_val", "test")
TRAIN_DIR = "GTSRB/Final_Training/Images"
TEST_DIR = "GTSRB/Final_Test/Images"
TEST_LABELS_CSV = "GT-final_test.csv"
NORM_CHUNK = 4096  # images per batched normalisation call (bounds peak memory)
LOCAL_KERNEL = "gaussian7"  # the input images' local contrast normalisation, as the original


@dataclass
class GTSRBTensors:
    """One split as tensors; row i of every field describes image i.

    images: ``(N, 3, S, S)`` uint8 RGB. labels: ``(N,)`` int64 class ids.
    tracks: ``(N,)`` int64 global track id (0..1306 for training images, ordered
    by class then track number; -1 for test images). frames: ``(N,)`` int64
    frame index within the track (-1 for test). rois: ``(N, 4)`` float32 region
    of interest ``x1, y1, x2, y2`` in the resized image's pixels.
    """

    images: torch.Tensor
    labels: torch.Tensor
    tracks: torch.Tensor
    frames: torch.Tensor
    rois: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> "GTSRBTensors":
        return GTSRBTensors(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def to_dict(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# ---------------------------------------------------------------- decoding

def _open_zip(path: Path) -> zipfile.ZipFile:
    """Open an archive, refusing corrupt files and unsafe entry names."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise StnError(f"{path} is not a readable zip archive (truncated or corrupt?): {error}") from None
    for name in archive.namelist():
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
            raise StnError(f"{path}: unsafe entry name {name!r} (absolute or escaping with '..')")
    return archive


def _read_member(archive: zipfile.ZipFile, name: str) -> bytes:
    try:
        return archive.read(name)
    except KeyError:
        raise StnError(f"{archive.filename}: entry {name} is listed in a CSV but missing from the archive") from None
    except (zipfile.BadZipFile, OSError, EOFError) as error:  # CRC error, truncated data
        raise StnError(f"{archive.filename}: entry {name} is corrupt: {error}") from None


def _read_csv(archive: zipfile.ZipFile, name: str) -> list[dict[str, str]]:
    text = _read_member(archive, name).decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text), delimiter=";"))
    if not rows or "Filename" not in rows[0]:
        raise StnError(f"{archive.filename}: {name} is not a GTSRB annotation CSV")
    return rows


def decode_resized(source, size: int, max_pixels: int | None = None) -> np.ndarray:
    """Any image Pillow reads (a path or a file object) as ``(size, size, 3)`` uint8 RGB, turned upright as
    its EXIF orientation says, the whole image resized (bilinear, aspect ratio not kept) as in the original
    work. Raises OSError/ValueError for unreadable data, ``Image.DecompressionBombError`` for more than
    ``max_pixels`` pixels (read from the header)."""
    with Image.open(source) as image:
        if max_pixels is not None and image.width * image.height > max_pixels:
            raise Image.DecompressionBombError(f"{image.width}x{image.height} pixels is more than the limit of "
                                               f"{max_pixels:,}")
        image = ImageOps.exif_transpose(image).convert("RGB")  # a phone photo as it is shown, not as stored
        if image.size != (size, size):
            image = image.resize((size, size), Image.BILINEAR)
        return np.asarray(image)


def _decode_image(archive: zipfile.ZipFile, name: str, size: int) -> np.ndarray:
    try:
        return decode_resized(io.BytesIO(_read_member(archive, name)), size)
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise StnError(f"{archive.filename}: cannot decode image {name}: {error}") from None


def _to_tensors(archive: zipfile.ZipFile, folder: str, rows: list[dict], labels: list[int],
                tracks: list[int], frames: list[int], size: int) -> GTSRBTensors:
    images = np.empty((len(rows), size, size, 3), np.uint8)
    rois = np.empty((len(rows), 4), np.float32)
    for i, row in enumerate(rows):
        images[i] = _decode_image(archive, f"{folder}/{row['Filename']}", size)
        try:
            width, height = float(row["Width"]), float(row["Height"])
            box = [float(row[k]) for k in ("Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2")]
        except (KeyError, TypeError, ValueError):
            raise StnError(f"{archive.filename}: bad annotation row for {row.get('Filename')}: {row}") from None
        rois[i] = [box[0] * size / width, box[1] * size / height, box[2] * size / width, box[3] * size / height]
    return GTSRBTensors(
        images=torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        labels=torch.tensor(labels, dtype=torch.int64),
        tracks=torch.tensor(tracks, dtype=torch.int64),
        frames=torch.tensor(frames, dtype=torch.int64),
        rois=torch.from_numpy(rois),
    )


def decode_training(path: Path, size: int) -> GTSRBTensors:
    """All 39,209 training images (``CCCCC/TTTTT_FFFFF.ppm``: class, track, frame)."""
    with _open_zip(path) as archive:
        rows, labels, tracks, frames, track_ids = [], [], [], [], {}
        for class_id in range(NUM_CLASSES):
            folder = f"{TRAIN_DIR}/{class_id:05d}"
            for row in _read_csv(archive, f"{folder}/GT-{class_id:05d}.csv"):
                stem = row["Filename"].rsplit(".", 1)[0]
                try:
                    track, frame = (int(part) for part in stem.split("_"))
                except ValueError:
                    raise StnError(f"{path}: training file name {row['Filename']!r} is not TTTTT_FFFFF.ppm") from None
                row["Filename"] = f"{class_id:05d}/{row['Filename']}"
                rows.append(row)
                labels.append(class_id)
                tracks.append(track_ids.setdefault((class_id, track), len(track_ids)))
                frames.append(frame)
        return _to_tensors(archive, TRAIN_DIR, rows, labels, tracks, frames, size)


def decode_test(images_path: Path, labels_path: Path, size: int) -> GTSRBTensors:
    """All 12,630 test images, labelled from ``GT-final_test.csv``."""
    with _open_zip(labels_path) as label_archive:
        rows = _read_csv(label_archive, TEST_LABELS_CSV)
    try:
        labels = [int(row["ClassId"]) for row in rows]
    except (KeyError, TypeError, ValueError):
        raise StnError(f"{labels_path}: {TEST_LABELS_CSV} lacks valid ClassId values") from None
    with _open_zip(images_path) as archive:
        no_track = [-1] * len(rows)
        return _to_tensors(archive, TEST_DIR, rows, labels, no_track, no_track, size)


# ---------------------------------------------------------------- cache

def cache_path(data_dir: Path, size: int) -> Path:
    return Path(data_dir) / f"gtsrb-{size}px.pt"


def _check_size(size: int) -> None:
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise StnError(f"image size must be a positive integer, got {size!r}")


def _read_cache(path: Path, size: int, hashes: dict[str, str]) -> dict | None:
    """The cache's content if it is readable and matches; else None."""
    if not path.exists():
        return None
    try:
        content = torch.load(path, weights_only=True)
    except Exception:  # truncated or foreign file: rebuild it
        return None
    key = {"format": FORMAT_VERSION, "size": size, "archives": hashes}
    if not isinstance(content, dict) or content.get("key") != key:
        return None
    return content


def _build_cache(size: int, location: DataLocation, download: bool, show_progress: bool) -> dict:
    """Fetch and verify the archives, decode both splits, write the cache; return its content."""
    paths, hashes = fetch_archives(location, download, show_progress)
    content = {
        "key": {"format": FORMAT_VERSION, "size": size, "archives": hashes},
        "train": decode_training(paths["train"], size).to_dict(),
        "test": decode_test(paths["test_images"], paths["test_labels"], size).to_dict(),
    }
    save_torch(content, cache_path(location.dir, size))
    remember_source(location)
    return content


def prepare(size: int = 32, location: DataLocation | None = None, download: bool = False, rebuild: bool = False,
            show_progress: bool = True, *, data_dir=None, source=None) -> Path:
    """Make sure the cache for ``size`` exists and is current; return its path. ``location``: see :func:`load_split`.
    The data directory remembers the source, so later calls given only the directory use it too."""
    _check_size(size)
    location = resolve_location(location, data_dir, source)
    if rebuild or _read_cache(cache_path(location.dir, size), size, expected_hashes(location)) is None:
        _build_cache(size, location, download, show_progress)
    remember_source(location)
    return cache_path(location.dir, size)


def load_tensors(size: int = 32, location: DataLocation | None = None,
                 download: bool = False) -> dict[str, GTSRBTensors]:
    """Both official splits, ``{"train": ..., "test": ...}``, building the cache if needed."""
    return cached_tensors(size, location, build=True, download=download)


def cached_tensors(size: int = 32, location: DataLocation | None = None, build: bool = False,
                   download: bool = False) -> dict[str, GTSRBTensors] | None:
    """Both official splits from a current cache; without one, None, or with ``build`` the cache built."""
    _check_size(size)
    location = location or DataLocation.resolve()
    content = _read_cache(cache_path(location.dir, size), size, expected_hashes(location))
    if content is None and not build:
        return None
    if content is None:
        content = _build_cache(size, location, download, show_progress=True)
    return {split: GTSRBTensors(**content[split]) for split in ("train", "test")}


# ---------------------------------------------------------------- splits

def validation_tracks(tensors: GTSRBTensors, seed: int, per_class: int = 1) -> torch.Tensor:
    """``per_class`` training track ids of every class, drawn with ``seed`` (sorted by class).

    One track per class is drawn exactly as stn-gtsrb 0.1 drew it, so earlier
    validation splits stay the same.
    """
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for class_id in range(NUM_CLASSES):
        tracks = tensors.tracks[tensors.labels == class_id].unique()
        if len(tracks) == 0:
            continue
        if per_class >= len(tracks):
            raise StnError(f"--val-tracks {per_class} leaves class {class_id} no training track "
                           f"(it has {len(tracks)})")
        if per_class == 1:
            chosen.append(tracks[torch.randint(len(tracks), (1,), generator=generator)])
        else:
            chosen.append(tracks[torch.randperm(len(tracks), generator=generator)[:per_class]])
    return torch.cat(chosen)


def check_split(split: str) -> None:
    """StnError unless ``split`` is one of ``SPLITS`` (checked before anything is loaded)."""
    if split not in SPLITS:
        raise StnError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")


def select_split(official: dict[str, GTSRBTensors], split: str, val_seed: int = 1,
                 val_tracks: int = 1) -> GTSRBTensors:
    """Cut one of ``SPLITS`` out of the official train/test tensors.

    ``val`` holds out ``val_tracks`` whole tracks per class (one: about 1,290
    images), chosen by ``val_seed``; ``train_without_val`` is the rest of the
    training set.
    """
    check_split(split)
    if split in ("train", "test"):
        return official[split]
    train = official["train"]
    in_val = torch.isin(train.tracks, validation_tracks(train, val_seed, val_tracks))
    return train.subset(in_val if split == "val" else ~in_val)


def load_split(split: str, size: int = 32, location: DataLocation | None = None, download: bool = False,
               val_seed: int = 1, val_tracks: int = 1, *, data_dir=None, source=None) -> GTSRBTensors:
    """The fast path: one split as whole tensors (see :class:`GTSRBTensors`). ``location``: where the data is
    (default: :meth:`DataLocation.resolve` of ``data_dir`` and ``source``, a convenience for one)."""
    check_split(split)
    location = resolve_location(location, data_dir, source)
    return select_split(load_tensors(size, location, download), split, val_seed, val_tracks)


# ---------------------------------------------------------------- normalisation

@dataclass
class Normalizer:
    """Global then local normalisation, fitted on a training split.

    mean/std: scalars (shape ``()``) or per channel (shape ``(3,)``), on the
    0..1 pixel scale; local: apply 7-tap Gaussian contrast normalisation after.
    """

    mean: torch.Tensor
    std: torch.Tensor
    local: bool = True
    legacy: bool = False  # the local step as stn-gtsrb 0.1 computed it (see normalization.py)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``(N, 3, H, W)`` -> float32 ``(N, 3, H, W)``, on the images' device."""
        out = torch.empty(images.shape, dtype=torch.float32, device=images.device)
        shape = (1, -1, 1, 1) if self.mean.dim() else ()
        mean, std = self.mean.to(out).reshape(shape), self.std.to(out).reshape(shape)
        for start in range(0, len(images), NORM_CHUNK):
            chunk = (images[start:start + NORM_CHUNK].float() / 255 - mean) / std
            if self.local:
                chunk = contrastive_normalize(chunk, LOCAL_KERNEL, self.legacy)
            out[start:start + NORM_CHUNK] = chunk
        return out

    def state_dict(self) -> dict:
        return {"mean": self.mean.cpu(), "std": self.std.cpu(), "local": self.local, "legacy": self.legacy}

    @classmethod
    def from_state_dict(cls, state: dict) -> "Normalizer":
        """A saved normaliser (one saved before ``legacy`` existed used the legacy formula); else StnError."""
        if not isinstance(state, dict) or not {"mean", "std", "local"} <= set(state):
            raise StnError("its normalizer is malformed: it needs mean, std and local")
        mean, std = state["mean"], state["std"]
        for name, value in (("mean", mean), ("std", std)):
            if not (isinstance(value, torch.Tensor) and tuple(value.shape) in ((), (3,)) and value.is_floating_point()
                    and torch.isfinite(value).all()):
                raise StnError(f"its normalizer is malformed: {name} must be a finite float tensor of shape () or (3,)")
        if mean.shape != std.shape or not (std > 0).all():
            raise StnError("its normalizer is malformed: std must be positive and shaped as mean")
        return cls(mean, std, bool(state["local"]), bool(state.get("legacy", True)))


def fit_normalizer(images: torch.Tensor, global_norm: bool = True, per_channel: bool = False,
                   local: bool = True, legacy: bool = False) -> Normalizer:
    """Mean/std of uint8 ``images`` (0..1 scale), one scalar or one per channel.

    ``global_norm=False`` gives the identity (mean 0, std 1) on the 0..1 scale.
    """
    if not global_norm:
        return Normalizer(torch.tensor(0.0), torch.tensor(1.0), local, legacy)
    pixels = images.double() / 255
    if per_channel:
        return Normalizer(pixels.mean((0, 2, 3)).float(), pixels.std((0, 2, 3)).float(), local, legacy)
    return Normalizer(pixels.mean().float(), pixels.std().float(), local, legacy)


# ---------------------------------------------------------------- Dataset

class GTSRB(torch.utils.data.Dataset):
    """GTSRB for DataLoader users, in the style of torchvision's datasets.

    Args:
        root: data directory for downloads and caches (default: ``$STN_GTSRB_DATA`` or the user cache dir).
        split: one of ``"train"``, ``"val"``, ``"train_without_val"``, ``"test"``.
        size: side of the square images, in pixels.
        download: fetch the archives from ``source`` if they are not there.
        transform: applied to each image, a uint8 tensor ``(3, size, size)``.
        source: base URL or folder holding the archives (default: see :meth:`DataLocation.resolve`).
        val_seed, val_tracks: which tracks, and how many per class, form the validation
            split (as a run's ``--val-seed`` and ``--val-tracks``).
        location: ``root`` and ``source`` as one :class:`DataLocation`, given instead of them.

    Items are ``(image, label)``.
    """

    def __init__(self, root=None, split: str = "train", size: int = 32, download: bool = False,
                 transform=None, source: str | None = None, val_seed: int = 1, val_tracks: int = 1, *,
                 location: DataLocation | None = None):
        check_split(split)
        self.split, self.size, self.transform = split, size, transform
        self.data = load_split(split, size, location, download, val_seed, val_tracks, data_dir=root, source=source)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        image = self.data.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.data.labels[index])


__all__ = [
    "ARCHIVES", "GTSRB", "GTSRBTensors", "Normalizer", "SPLITS", "fit_normalizer", "load_split",
    "load_tensors", "prepare", "select_split",
]
