"""Seeing what the transformers learn: sampled regions, animations, run reports.

Coordinates. A transformer maps normalised output coordinates to normalised
input coordinates (see geometry.py, ``align_corners=False``). Its *sampled
region* is the image of its output frame, drawn here in the input's pixel
coordinates: origin at the top-left edge of the image, x to the right, y down,
the image spanning ``[0, size]``. Corners are ordered top-left, top-right,
bottom-right, bottom-left.

A transformer deeper in the network warps a feature map whose normalised frame
is (up to padding effects) the frame of the previous transformer's output, so
its region on the input image is found by mapping points through the chain of
transformers back to the input: ``T_1 ∘ T_2 ∘ ... ∘ T_p`` (a :class:`Region`).
Affine and projective maps compose as 3×3 matrices; a thin-plate spline in the
chain maps points one transformer at a time. Each picture shows, for every
transformer, the input image resampled through that chain (the region of the
input that transformer looks at) and, on the input, its region's marks: dots
at the corners (affine, projective) or at the spline's control points, and, as
soon as the chain is not affine, the warped outline (projective) or the warped
control grid (spline) as lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from .archives import DataLocation
from .classes import CLASS_NAMES
from .config import TrainConfig
from .data import Normalizer, load_tensors, select_split, validation_tracks
from .errors import StnError
from .evaluation import eval_mode, require_val_if_asked
from .fileio import atomic_write
from .geometry import FRAME_CORNERS, matrix_points, pixel_centres, sample, warp
from .models import ConvNet
from .predictor import load_predictor
from .transformer import SpatialTransformer

DOT_COLOURS = ((255, 255, 255), (255, 220, 0), (0, 220, 255), (255, 80, 255))  # one per transformer
MARGIN, CAPTION_HEIGHT = 4, 14  # pixels around panels; height of a caption line
RECORDED_IMAGES = 6  # images drawn by the training recorder


# ---------------------------------------------------------------- geometry

def compose(chain: list[tuple[SpatialTransformer, torch.Tensor]]) -> torch.Tensor:
    """``theta_1 ∘ theta_2 ∘ ...`` of a chain of composing families: map the last transformer's output frame
    to the first one's input (``(B, 2, 3)`` if all are affine, else ``(B, 3, 3)``)."""
    matrix = None
    for transformer, theta in chain:
        step = transformer.family.matrix(theta)
        matrix = step if matrix is None else matrix @ step
    return matrix[:, :2] if all(transformer.family.is_affine for transformer, _ in chain) else matrix


def to_pixels(points: torch.Tensor, size: float) -> torch.Tensor:
    """Normalised input points -> input pixels (see the module docstring)."""
    return (points + 1) * size / 2


def corners(theta: torch.Tensor, size: float) -> torch.Tensor:
    """The sampled region's four corners, ``(B, 4, 2)`` (x, y) in input pixels, of an affine or projective theta."""
    return to_pixels(matrix_points(theta, FRAME_CORNERS.to(theta)), size)


@dataclass
class Region:
    """Where a transformer's output frame lies on the input image, for a batch of images: the chain
    ``[(transformer, theta (B, ...)), ...]`` from the input's transformer to this one."""

    chain: list[tuple[SpatialTransformer, torch.Tensor]]

    @property
    def matrix(self) -> torch.Tensor | None:
        """The composed theta of the chain, or None where a spline breaks the composition."""
        if not all(transformer.family.composes for transformer, _ in self.chain):
            return None
        return compose(self.chain)

    def points(self, points: torch.Tensor) -> torch.Tensor:
        """Output points ``(N, 2)`` of the last transformer -> normalised input-image points ``(B, N, 2)``."""
        matrix = self.matrix
        if matrix is not None:
            return matrix_points(matrix, points.to(matrix))
        for transformer, theta in reversed(self.chain):
            points = transformer.map_points(theta, points)
        return points

    def select(self, index: int) -> "Region":
        """The region of image ``index`` alone (a batch of 1)."""
        return Region([(transformer, theta[index:index + 1]) for transformer, theta in self.chain])

    def view(self, images: torch.Tensor) -> torch.Tensor:
        """0..1 float ``images`` ``(B, C, S, S)`` resampled through the chain: what this transformer looks at."""
        matrix, size = self.matrix, images.shape[-1]
        if matrix is not None:
            return warp(images, matrix.to(images.dtype))
        return sample(images, self.points(pixel_centres(size, size)).view(-1, size, size, 2))

    def marks(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Normalised output points of the last transformer to mark ``(N, 2)``, and polylines to draw
        (empty while the whole chain is affine)."""
        dots, lines = self.chain[-1][0].family.marks()
        affine = all(transformer.family.is_affine for transformer, _ in self.chain)
        return dots, [] if affine else lines


def image_regions(model: ConvNet, thetas: dict[int, torch.Tensor]) -> dict[int, Region]:
    """Per transformer position, the :class:`Region` of its output frame on the input image."""
    regions, chain = {}, []
    for position in sorted(thetas):
        chain.append((model.transformers[str(position)], thetas[position]))
        regions[position] = Region(list(chain))
    return regions


# ---------------------------------------------------------------- pictures

@torch.no_grad()
def transformer_views(model: ConvNet, images: torch.Tensor, normalizer: Normalizer):
    """Run uint8 ``images`` ``(B, 3, S, S)`` through the model: (predicted ids, {position: Region})."""
    model.eval()
    logits, thetas, _ = model.trace(normalizer(images))
    return logits.argmax(1), image_regions(model, thetas)


def enlarge(image: torch.Tensor, scale: int) -> Image.Image:
    """uint8 or 0..1 float ``(3, H, W)`` -> an RGB PIL image enlarged ``scale`` times (nearest)."""
    if image.dtype != torch.uint8:
        image = (image.clamp(0, 1) * 255).round().to(torch.uint8)
    picture = Image.fromarray(image.permute(1, 2, 0).cpu().numpy(), "RGB")
    return picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)


def draw_dots(picture: Image.Image, points: torch.Tensor, scale: int, colour) -> None:
    """Draw ``points`` ``(N, 2)`` (input pixels) as dots on the enlarged ``picture``."""
    draw, radius = ImageDraw.Draw(picture), max(2, scale - 1)
    for x, y in (points * scale).tolist():
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=colour, outline=(0, 0, 0))


def draw_lines(picture: Image.Image, lines: list[torch.Tensor], scale: int, colour) -> None:
    """Draw polylines ``[(N, 2), ...]`` (input pixels) on the enlarged ``picture``."""
    draw = ImageDraw.Draw(picture)
    for line in lines:
        draw.line([tuple(point) for point in (line * scale).tolist()], fill=colour, width=1)


def _font():
    try:
        return ImageFont.load_default(size=11)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def panel_row(image: torch.Tensor, regions: dict[int, Region], scale: int, caption: str) -> Image.Image:
    """One row: the input with each transformer's region marked, then each transformer's view of the input.

    image: uint8 ``(3, S, S)``; regions: {position: its Region for this image (a batch of 1)}.
    """
    size = image.shape[-1]
    source = enlarge(image, scale)
    views = []
    for index, (_position, region) in enumerate(sorted(regions.items())):
        colour = DOT_COLOURS[index % len(DOT_COLOURS)]
        dots, lines = region.marks()
        draw_lines(source, [to_pixels(region.points(line)[0], size) for line in lines], scale, colour)
        draw_dots(source, to_pixels(region.points(dots)[0], size), scale, colour)
        views.append(enlarge(region.view(image[None].float() / 255)[0], scale))
    panels = [source, *views]
    side = size * scale
    row = Image.new("RGB", (MARGIN + len(panels) * (side + MARGIN), CAPTION_HEIGHT + side + MARGIN), (30, 30, 30))
    for i, panel in enumerate(panels):
        row.paste(panel, (MARGIN + i * (side + MARGIN), CAPTION_HEIGHT))
    ImageDraw.Draw(row).text((MARGIN, 1), caption, fill=(235, 235, 235), font=_font())
    return row


def stack(rows: list[Image.Image], title: str | None = None) -> Image.Image:
    """Rows one under the other, with an optional title line on top."""
    top = CAPTION_HEIGHT if title else 0
    sheet = Image.new("RGB", (max(r.width for r in rows), top + sum(r.height for r in rows)), (30, 30, 30))
    if title:
        ImageDraw.Draw(sheet).text((MARGIN, 1), title, fill=(255, 255, 255), font=_font())
    y = top
    for row in rows:
        sheet.paste(row, (0, y))
        y += row.height
    return sheet


def class_caption(label: int, predicted: int | None = None) -> str:
    text = f"{label}: {CLASS_NAMES[label]}"
    if predicted is not None and predicted != label:
        text += f"  (predicted {predicted}: {CLASS_NAMES[predicted]})"
    return text


def plot_transforms(model: ConvNet, images: torch.Tensor, labels: torch.Tensor, normalizer: Normalizer,
                    scale: int = 4, title: str | None = None, captions: list[str] | None = None) -> Image.Image:
    """A grid: per image, the input with corner dots and each transformer's view (PIL image)."""
    predicted, regions = transformer_views(model, images, normalizer)
    rows = []
    for i in range(len(images)):
        caption = captions[i] if captions else class_caption(int(labels[i]), int(predicted[i]))
        rows.append(panel_row(images[i], {p: region.select(i) for p, region in regions.items()}, scale, caption))
    return stack(rows, title)


# ---------------------------------------------------------------- files

def save_png(picture: Image.Image, path: Path | str) -> Path:
    return atomic_write(path, lambda temp: picture.save(temp, format="PNG"))


def save_gif(frames: list[Image.Image], path: Path | str, frame_ms: int = 120) -> Path:
    """An endlessly looping GIF of ``frames`` (all padded to the largest size)."""
    width, height = max(f.width for f in frames), max(f.height for f in frames)
    padded = []
    for frame in frames:
        canvas = Image.new("RGB", (width, height), (30, 30, 30))
        canvas.paste(frame, (0, 0))
        padded.append(canvas)
    return atomic_write(path, lambda temp: padded[0].save(temp, format="GIF", save_all=True,
                                                          append_images=padded[1:], duration=frame_ms, loop=0))


# ---------------------------------------------------------------- from checkpoints

def _split_tensors(cfg, split: str, location: DataLocation | None = None):
    official = load_tensors(cfg.image_size, location)
    require_val_if_asked(cfg, split)
    return select_split(official, split, cfg.val_seed, cfg.val_tracks)


def _torch_model(source, best: bool, purpose: str) -> tuple[ConvNet, TrainConfig, Normalizer]:
    """(model, config, normaliser) of a source through :func:`predictor.load_predictor` (PyTorch only)."""
    predictor = load_predictor(source, best=best)
    model, normalizer = predictor.torch_model(purpose)
    return model, predictor.config, normalizer


def warn_if_no_transformers(model: ConvNet, echo) -> None:
    if not len(model.transformers):
        echo("note: this model has no spatial transformer; showing the inputs only")


def plot_checkpoint(path, count: int = 8, split: str = "test", indices: list[int] | None = None, seed: int = 0,
                    scale: int = 4, location: DataLocation | None = None, echo=print,
                    best: bool = False) -> Image.Image:
    """``stn-gtsrb plot``: ``count`` random (seeded) or chosen images of a split."""
    model, cfg, normalizer = _torch_model(path, best, "plot")
    warn_if_no_transformers(model, echo)
    tensors = _split_tensors(cfg, split, location)
    if indices is None:
        if count < 1:
            raise StnError(f"--count must be at least 1, got {count}")
        indices = torch.randperm(len(tensors), generator=torch.Generator().manual_seed(seed))[:count].tolist()
    bad = [i for i in indices if not 0 <= i < len(tensors)]
    if bad:
        raise StnError(f"image index {bad[0]} is out of range for the {split} split (0 to {len(tensors) - 1})")
    chosen = tensors.subset(torch.tensor(indices))
    return plot_transforms(model, chosen.images, chosen.labels, normalizer, scale,
                           title=f"{split} images {', '.join(map(str, indices))}")


def pick_track(cfg, class_id: int | None = None, track: int | None = None, location: DataLocation | None = None):
    """The frames (in order) of a training track, by global track id or by class.

    By class: the held-out validation track of that class when the run used
    ``--val``, else the class's first track.
    """
    train = load_tensors(cfg.image_size, location)["train"]
    if track is None:
        if class_id is None or not 0 <= class_id < len(CLASS_NAMES):
            raise StnError(f"unknown class {class_id!r}; valid: 0 to {len(CLASS_NAMES) - 1}")
        candidates = train.tracks[train.labels == class_id]
        if cfg.val:
            candidates = candidates[torch.isin(candidates, validation_tracks(train, cfg.val_seed, cfg.val_tracks))]
        track = int(candidates.min())
    frames = train.subset(train.tracks == track)
    if len(frames) == 0:
        raise StnError(f"unknown track {track}; valid: 0 to {int(train.tracks.max())}")
    return track, frames.subset(frames.frames.argsort())


def track_animation(path, class_id: int | None = None, track: int | None = None, scale: int = 4,
                    location: DataLocation | None = None, echo=print, best: bool = False) -> list[Image.Image]:
    """``stn-gtsrb animate``: one frame per image of a track, with corner dots and transformer views."""
    model, cfg, normalizer = _torch_model(path, best, "animate")
    warn_if_no_transformers(model, echo)
    track, frames = pick_track(cfg, class_id, track, location)
    predicted, regions = transformer_views(model, frames.images, normalizer)
    label = int(frames.labels[0])
    return [panel_row(frames.images[i], {p: region.select(i) for p, region in regions.items()}, scale,
                      f"track {track}, frame {i + 1}/{len(frames)}: {class_caption(label, int(predicted[i]))}")
            for i in range(len(frames))]


def training_frames(run_dir: Path | str, stride: int = 1) -> list[Image.Image]:
    """The frames a run recorded with ``--record-st`` (every ``stride``-th, and the last), in step order."""
    if stride < 1:
        raise StnError(f"--stride must be at least 1, got {stride}")
    paths = sorted((Path(run_dir) / "st_frames").glob("step_*.png"))
    if not paths:
        raise StnError(f"{run_dir} has no recorded frames: train it with --record-st K")
    kept = paths[::stride] + ([paths[-1]] if (len(paths) - 1) % stride else [])
    return [Image.open(path).convert("RGB") for path in kept]


TENTHS = "tenths"  # record before training and after each tenth of epoch 1: 11 frames, as the original's animation


def parse_record_every(text: str | int) -> int | str:
    """``--record-st``'s value: a positive number of steps, or ``"tenths"``; StnError otherwise."""
    if text == TENTHS:
        return TENTHS
    try:
        every = int(text)
    except ValueError:
        every = 0
    if every < 1:
        raise StnError(f"--record-st must be a positive number of steps or '{TENTHS}', got {text!r}")
    return every


class TrainingRecorder:
    """A training callback (train.Step): during epoch 1 draws fixed images through the transformers,
    before the first step and then every ``every`` steps and after the last, or with ``every="tenths"``
    after each tenth of the epoch (11 frames in all).

    Writes ``out_dir/step_NNNNN.png`` per recorded step and, after the epoch's last step,
    ``gif_path``, captioned "epoch 1, step i/N".
    """

    def __init__(self, every: int | str, out_dir: Path, gif_path: Path, seed: int = 1, scale: int = 3, echo=print):
        self.every, self.seed, self.scale, self.echo = parse_record_every(every), seed, scale, echo
        self.out_dir, self.gif_path = Path(out_dir), Path(gif_path)
        self.images: torch.Tensor | None = None  # RECORDED_IMAGES of the run's training images, chosen at the start
        self.labels: torch.Tensor | None = None
        self.frames: list[Image.Image] = []

    @classmethod
    def for_run(cls, cfg: TrainConfig, every: int | str, run_dir: Path | str, echo=print) -> "TrainingRecorder":
        """A recorder into ``run_dir`` of ``RECORDED_IMAGES`` of the run's training images, chosen with
        ``cfg.seed`` from the split the trainer holds (no second load)."""
        run_dir = Path(run_dir)
        return cls(every, run_dir / "st_frames", run_dir / "st_epoch1.gif", seed=cfg.seed, echo=echo)

    def records(self, done: int, total: int) -> bool:
        """Whether the state after ``done`` of ``total`` steps is drawn."""
        if self.every == TENTHS:
            return done in {round(total * tenth / 10) for tenth in range(11)}
        return done % self.every == 0 or done == total

    def __call__(self, step) -> None:
        """Called with a train.Step (model, normalizer, epoch, done, total)."""
        if step.epoch != 1 or not self.records(step.done, step.total):
            return
        if self.images is None:
            order = torch.randperm(len(step.training), generator=torch.Generator().manual_seed(self.seed))
            chosen = step.training.subset(order[:RECORDED_IMAGES])
            self.images, self.labels = chosen.images, chosen.labels
        images = self.images.to(next(step.model.parameters()).device)
        with eval_mode(step.model):
            frame = plot_transforms(step.model, images, self.labels, step.normalizer, self.scale,
                                    title=f"epoch 1, step {step.done}/{step.total}")
        save_png(frame, self.out_dir / f"step_{step.done:05d}.png")
        self.frames.append(frame)
        if step.done == step.total:
            self.echo(f"transformer animation of epoch 1: {save_gif(self.frames, self.gif_path)}")
