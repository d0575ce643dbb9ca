"""Track stability: how still a transformer's output stays over the 30 frames of a track.

A GTSRB training track is one sign filmed 30 times as the car approaches it.
The original's track animation shows a trained transformer's output staying almost
still while its input moves; this module puts numbers on it, per model, on
tracks given by id (best: tracks the model never trained on, e.g. the
validation tracks of a ``--val`` run). Per track, then averaged over tracks:

* predictions: the share of frames classified right, whether the track gets one
  class throughout, and the class changes between consecutive frames;
* per transformer, its input map's and output map's *variation* (the mean over
  pixels and channels of each pixel's standard deviation over the frames; both
  maps have the same size) and their ratio: below 1, the output moves less than
  the input;
* per transformer, the spread of its sampled region over the frames: of its
  centre (root-mean-square distance from the mean centre, as a fraction of the
  side) and of its scale (standard deviation over mean). Centre and scale come
  from SpatialTransformer.region: for an affine ``theta = [A | t]``, ``t`` and
  ``sqrt|det A|``; for a projective or spline map, the centroid of the warped
  outline and the square root of its area over the frame's.
"""

from __future__ import annotations

from functools import partial

import torch

from .data import GTSRBTensors, Normalizer
from .models import ConvNet


def track_frames(train: GTSRBTensors, track: int) -> tuple[torch.Tensor, int]:
    """The uint8 frames ``(T, 3, S, S)`` of training track ``track`` in frame order, and its class."""
    index = (train.tracks == track).nonzero().flatten()
    index = index[train.frames[index].argsort()]
    return train.images[index], int(train.labels[index[0]])


def _keep(store: dict, position: int, module, args, output) -> None:
    store[position] = (args[0], *output)  # (input map, output map, theta)


@torch.no_grad()
def trace_transformers(model: ConvNet, x: torch.Tensor) -> tuple[torch.Tensor, dict[int, tuple]]:
    """Predicted classes ``(N,)`` of normalised ``x`` and, per transformer position, its
    (input map, output map, theta) on ``x``."""
    captured: dict[int, tuple] = {}
    hooks = [transformer.register_forward_hook(partial(_keep, captured, int(position)))
             for position, transformer in model.transformers.items()]
    try:
        predicted = model(x).argmax(1)
    finally:
        for hook in hooks:
            hook.remove()
    return predicted, captured


def variation(maps: torch.Tensor) -> float:
    """Mean over pixels and channels of each pixel's standard deviation over the frames of ``(T, C, H, W)``."""
    return float(maps.float().std(0).mean())


def region_spread(centre: torch.Tensor, scale: torch.Tensor) -> dict[str, float]:
    """Spread over frames of the sampled region, from its centre ``(T, 2)`` (normalised coordinates) and
    scale ``(T,)``: centre (fraction of the side) and scale (relative)."""
    centre = centre.float() / 2  # normalised coordinates: the side is 2 long
    scale = scale.float()
    return {"centre_spread": float((centre - centre.mean(0)).pow(2).sum(1).mean().sqrt()),
            "scale_spread": float(scale.std() / scale.mean())}


def track_figures(model: ConvNet, normalizer: Normalizer, frames: torch.Tensor, label: int) -> dict:
    """One track's figures (see the module docstring)."""
    device = next(model.parameters()).device
    predicted, captured = trace_transformers(model.eval(), normalizer(frames.to(device)))
    figures = {"frames": len(frames), "correct": int((predicted == label).sum()),
               "one_prediction": bool((predicted == predicted[0]).all()),
               "changes": int((predicted[1:] != predicted[:-1]).sum()), "transformers": {}}
    for position, (inputs, outputs, theta) in sorted(captured.items()):
        region = model.transformers[str(position)].region(theta)
        figures["transformers"][position] = {"input_variation": variation(inputs),
                                             "output_variation": variation(outputs), **region_spread(*region)}
    return figures


def mean_figures(per_track: list[dict]) -> dict:
    """Figures of several tracks, averaged (the variation ratio is that of the mean variations)."""
    count = len(per_track)
    frames = sum(t["frames"] for t in per_track)
    summary = {"tracks": count, "frames": frames,
               "accuracy": 100.0 * sum(t["correct"] for t in per_track) / frames,
               "one_prediction": 100.0 * sum(t["one_prediction"] for t in per_track) / count,
               "changes": sum(t["changes"] for t in per_track) / count, "transformers": {}}
    for position in per_track[0]["transformers"]:
        keys = per_track[0]["transformers"][position]
        means = {key: sum(t["transformers"][position][key] for t in per_track) / count for key in keys}
        means["ratio"] = means["output_variation"] / means["input_variation"]
        summary["transformers"][position] = means
    return summary


def stability(model: ConvNet, normalizer: Normalizer, train: GTSRBTensors, tracks: list[int]) -> dict:
    """The mean figures of ``model`` over training ``tracks`` (global track ids)."""
    return mean_figures([track_figures(model, normalizer, *track_frames(train, track)) for track in tracks])
