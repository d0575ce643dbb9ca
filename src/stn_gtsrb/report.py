"""Run reports: training curves and the test confusion matrix, as PNGs (needs matplotlib)."""

from __future__ import annotations

from pathlib import Path

import torch

from .archives import DataLocation
from .checkpoints import checkpoint_path
from .classes import CLASS_NAMES
from .errors import StnError
from .fileio import atomic_write
from .predictor import load_predictor
from .runs import read_log
from .scoring import split_data

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:  # the viz extra is not installed: report() says so
    plt = None



def confusion_matrix(labels: torch.Tensor, predicted: torch.Tensor, classes: int = len(CLASS_NAMES)) -> torch.Tensor:
    """``(classes, classes)`` counts, rows = true class, columns = predicted class."""
    return torch.bincount(labels * classes + predicted, minlength=classes * classes).view(classes, classes)


def most_confused(matrix: torch.Tensor, top: int = 10) -> list[tuple[int, int, int]]:
    """The ``top`` (true, predicted, count) off-diagonal pairs, most frequent first."""
    off = matrix.clone()
    off.fill_diagonal_(0)
    counts, flat = off.flatten().sort(descending=True)
    size = matrix.shape[0]
    return [(int(i) // size, int(i) % size, int(c)) for c, i in zip(counts[:top], flat[:top], strict=True) if c > 0]


def report(run_dir: Path | str, out_dir: Path | str | None = None, location: DataLocation | None = None,
           device: str = "auto", best: bool = False) -> list[Path]:
    """``stn-gtsrb report``: training curves and the test confusion matrix of the run's final model (with
    ``best``: its best.pt), as PNGs."""
    if plt is None:
        raise StnError("reports need matplotlib: pip install 'stn-gtsrb[viz]'")
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir else run_dir
    log = read_log(run_dir)
    model_file = checkpoint_path(run_dir, best)
    if not log or not model_file.exists():
        raise StnError(f"{run_dir} holds no finished epoch (log.jsonl and {model_file.name} are needed)")
    epochs = [r["epoch"] for r in log]
    figure, (loss_axis, acc_axis) = plt.subplots(1, 2, figsize=(10, 4))
    loss_axis.plot(epochs, [r["train_loss"] for r in log], marker="o")
    loss_axis.set(title="training loss", xlabel="epoch", yscale="log")
    for name in ("train", "val", "test"):  # test: the final epoch only, unless the run had --test-curve
        scored = [r for r in log if f"{name}_acc" in r]
        if scored:
            acc_axis.plot([r["epoch"] for r in scored], [r[f"{name}_acc"] for r in scored], marker="o", label=name)
    acc_axis.set(title="accuracy (%)", xlabel="epoch")
    acc_axis.legend()
    acc_axis.grid(alpha=0.3)
    figure.tight_layout()
    curves = atomic_write(out_dir / "curves.png", lambda temp: figure.savefig(temp, format="png", dpi=100))
    plt.close(figure)

    predictor = load_predictor(run_dir, best=best, device=device)
    data = split_data(predictor, "test", location)
    matrix = confusion_matrix(data.labels, predictor.predict(data.images))
    figure, (matrix_axis, text_axis) = plt.subplots(1, 2, figsize=(14, 6.5), gridspec_kw={"width_ratios": [3, 2]})
    matrix_axis.imshow(torch.log1p(matrix.float()).numpy(), cmap="viridis")
    matrix_axis.set(title=f"test confusion (log scale), accuracy {100 * matrix.trace() / matrix.sum():.2f}%",
                    xlabel="predicted class", ylabel="true class")
    pairs = most_confused(matrix)
    lines = ["most confused (true -> predicted: count)"] + [
        f"{t} {CLASS_NAMES[t]} -> {p} {CLASS_NAMES[p]}: {c}" for t, p, c in pairs]
    text_axis.axis("off")
    text_axis.text(0, 1, "\n".join(lines), va="top", family="monospace", fontsize=8)
    figure.tight_layout()
    confusion = atomic_write(out_dir / "confusion.png", lambda temp: figure.savefig(temp, format="png", dpi=100))
    plt.close(figure)
    return [curves, confusion]
