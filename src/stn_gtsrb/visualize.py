"""Seeing what the transformers learn: sampled regions, animations, run reports.

Coordinates. A transformer's ``theta`` maps normalised output coordinates to
normalised input coordinates (see transformer.py, ``align_corners=False``).
The *sampled region* is the image of the output's four corners, returned here
in the input's pixel coordinates: origin at the top-left edge of the image, x
to the right, y down, the image spanning ``[0, size]``. Corners are ordered
top-left, top-right, bottom-right, bottom-left.

A transformer deeper in the network warps a feature map whose normalised frame
is (up to padding effects) the frame of the previous transformer's output, so
its region on the input image is found by composing the matrices:
``theta_1 ∘ theta_2 ∘ ... ∘ theta_p``. Each picture shows, for every
transformer, the input image resampled by that composed matrix: the region of
the input that transformer looks at.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from .checkpoints import load_trained
from .classes import CLASS_NAMES
from .config import TrainConfig
from .data import Normalizer, load_tensors, select_split, validation_tracks
from .device_data import training_split
from .errors import StnError
from .evaluation import require_val_if_asked
from .fileio import atomic_write
from .models import ConvNet
from .transformer import warp

DOT_COLOURS = ((255, 255, 255), (255, 220, 0), (0, 220, 255), (255, 80, 255))  # one per transformer
OUTPUT_CORNERS = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
MARGIN, CAPTION_HEIGHT = 4, 14  # pixels around panels; height of a caption line
RECORDED_IMAGES = 6  # images drawn by the training recorder


# ---------------------------------------------------------------- geometry

def homogeneous(theta: torch.Tensor) -> torch.Tensor:
    """``(B, 2, 3)`` -> ``(B, 3, 3)`` with last row ``[0, 0, 1]``."""
    bottom = theta.new_tensor([0.0, 0.0, 1.0]).expand(theta.shape[0], 1, 3)
    return torch.cat([theta, bottom], dim=1)


def compose(*thetas: torch.Tensor) -> torch.Tensor:
    """``theta_1 ∘ theta_2 ∘ ...``: map the last transformer's output frame to the first one's input."""
    matrix = homogeneous(thetas[0])
    for theta in thetas[1:]:
        matrix = matrix @ homogeneous(theta)
    return matrix[:, :2]


def corners(theta: torch.Tensor, size: float) -> torch.Tensor:
    """The sampled region's four corners, ``(B, 4, 2)`` (x, y) in input pixels (see module docstring)."""
    points = OUTPUT_CORNERS.to(theta) @ theta[:, :, :2].transpose(1, 2) + theta[:, None, :, 2]
    return (points + 1) * size / 2


def region_view(image: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """What a transformer sees of uint8 ``image`` ``(3, S, S)``: the image resampled by its composed
    ``theta`` ``(2, 3)``, as 0..1 floats ``(3, S, S)``."""
    return warp(image[None].float() / 255, theta[None])[0]


def image_regions(thetas: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
    """Per transformer position, the composed theta that maps its output frame onto the input image."""
    composed, chain = {}, []
    for position in sorted(thetas):
        chain.append(thetas[position])
        composed[position] = compose(*chain)
    return composed


# ---------------------------------------------------------------- pictures

@torch.no_grad()
def transformer_views(model: ConvNet, images: torch.Tensor, normalizer: Normalizer):
    """Run uint8 ``images`` ``(B, 3, S, S)`` through the model: (predicted ids, {position: composed theta})."""
    model.eval()
    logits, thetas, _ = model.trace(normalizer(images))
    return logits.argmax(1), image_regions(thetas)


def enlarge(image: torch.Tensor, scale: int) -> Image.Image:
    """uint8 or 0..1 float ``(3, H, W)`` -> an RGB PIL image enlarged ``scale`` times (nearest)."""
    if image.dtype != torch.uint8:
        image = (image.clamp(0, 1) * 255).round().to(torch.uint8)
    picture = Image.fromarray(image.permute(1, 2, 0).cpu().numpy(), "RGB")
    return picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)


def draw_dots(picture: Image.Image, points: torch.Tensor, scale: int, colour) -> None:
    """Draw the 4 corner ``points`` (input pixels) as dots on the enlarged ``picture``."""
    draw, radius = ImageDraw.Draw(picture), max(2, scale - 1)
    for x, y in (points * scale).tolist():
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=colour, outline=(0, 0, 0))


def _font():
    try:
        return ImageFont.load_default(size=11)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def panel_row(image: torch.Tensor, regions: dict[int, torch.Tensor], scale: int, caption: str) -> Image.Image:
    """One row: the input with each transformer's corner dots, then each transformer's view of the input.

    image: uint8 ``(3, S, S)``; regions: {position: composed theta ``(2, 3)``}.
    """
    size = image.shape[-1]
    source = enlarge(image, scale)
    views = []
    for index, (_position, theta) in enumerate(sorted(regions.items())):
        draw_dots(source, corners(theta[None], size)[0], scale, DOT_COLOURS[index % len(DOT_COLOURS)])
        views.append(enlarge(region_view(image, theta), scale))
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
        rows.append(panel_row(images[i], {p: theta[i] for p, theta in regions.items()}, scale, caption))
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

def _split_tensors(cfg, split: str, data_dir=None, source=None):
    official = load_tensors(cfg.image_size, data_dir, source)
    require_val_if_asked(cfg, split)
    return select_split(official, split, cfg.val_seed, cfg.val_tracks)


def warn_if_no_transformers(model: ConvNet, echo) -> None:
    if not len(model.transformers):
        echo("note: this model has no spatial transformer; showing the inputs only")


def plot_checkpoint(path, count: int = 8, split: str = "test", indices: list[int] | None = None, seed: int = 0,
                    scale: int = 4, data_dir=None, source=None, echo=print, best: bool = False) -> Image.Image:
    """``stn-gtsrb plot``: ``count`` random (seeded) or chosen images of a split."""
    model, cfg, normalizer = load_trained(path, best=best)
    warn_if_no_transformers(model, echo)
    tensors = _split_tensors(cfg, split, data_dir, source)
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


def pick_track(cfg, class_id: int | None = None, track: int | None = None, data_dir=None, source=None):
    """The frames (in order) of a training track, by global track id or by class.

    By class: the held-out validation track of that class when the run used
    ``--val``, else the class's first track.
    """
    train = load_tensors(cfg.image_size, data_dir, source)["train"]
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
                    data_dir=None, source=None, echo=print, best: bool = False) -> list[Image.Image]:
    """``stn-gtsrb animate``: one frame per image of a track, with corner dots and transformer views."""
    model, cfg, normalizer = load_trained(path, best=best)
    warn_if_no_transformers(model, echo)
    track, frames = pick_track(cfg, class_id, track, data_dir, source)
    predicted, regions = transformer_views(model, frames.images, normalizer)
    label = int(frames.labels[0])
    return [panel_row(frames.images[i], {p: theta[i] for p, theta in regions.items()}, scale,
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


TENTHS = "tenths"  # record before training and after each tenth of epoch 1: 11 frames, as the seed's animation


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

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, every: int | str, out_dir: Path,
                 gif_path: Path, scale: int = 3, echo=print):
        every = parse_record_every(every)
        self.images, self.labels, self.every, self.scale, self.echo = images, labels, every, scale, echo
        self.out_dir, self.gif_path = Path(out_dir), Path(gif_path)
        self.frames: list[Image.Image] = []

    @classmethod
    def for_run(cls, cfg: TrainConfig, every: int | str, run_dir: Path | str, data_dir=None, source=None,
                echo=print) -> "TrainingRecorder":
        """``RECORDED_IMAGES`` training images of ``cfg`` (seeded), recorded into ``run_dir``."""
        train = training_split(cfg, load_tensors(cfg.image_size, data_dir, source))
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed))
        chosen = train.subset(order[:RECORDED_IMAGES])
        run_dir = Path(run_dir)
        return cls(chosen.images, chosen.labels, every, run_dir / "st_frames", run_dir / "st_epoch1.gif",
                   echo=echo)

    def records(self, done: int, total: int) -> bool:
        """Whether the state after ``done`` of ``total`` steps is drawn."""
        if self.every == TENTHS:
            return done in {round(total * tenth / 10) for tenth in range(11)}
        return done % self.every == 0 or done == total

    def __call__(self, step) -> None:
        """Called with a train.Step (model, normalizer, epoch, done, total)."""
        if step.epoch != 1 or not self.records(step.done, step.total):
            return
        model, was_training = step.model, step.model.training
        images = self.images.to(next(model.parameters()).device)
        frame = plot_transforms(model, images, self.labels, step.normalizer, self.scale,
                                title=f"epoch 1, step {step.done}/{step.total}")
        model.train(was_training)
        save_png(frame, self.out_dir / f"step_{step.done:05d}.png")
        self.frames.append(frame)
        if step.done == step.total:
            self.echo(f"transformer animation of epoch 1: {save_gif(self.frames, self.gif_path)}")
