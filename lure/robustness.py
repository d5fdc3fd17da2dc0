"""A model's accuracy and calibration on the corrupted test sets made by the corrupt stage."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lure import paths
from lure.corruptions import STANDARD
from lure.errors import LureError
from lure.images import Images
from lure.io import load_arrays
from lure.metrics import calibration
from lure.models import predict


def _load(path: Path) -> dict:
    if not path.is_file():
        raise LureError(f"{path} is missing: run the corrupt stage (dvc repro) first")
    return load_arrays(path)


def corruption_metrics(model: nn.Module, names: tuple[str, ...], device: torch.device, batch_size: int,
                       bins: int) -> dict:
    """Accuracy per corruption and severity; over the standard corruptions at all severities:
    mean corruption accuracy (mca), its ratio to clean accuracy on the same images (relative),
    mean ECE under corruption (ece), and mean accuracy per severity (by_severity)."""
    subset = _load(paths.CORRUPTED / paths.SUBSET)

    def evaluate(images) -> dict[str, float]:
        on_device = Images(images, subset["y"]).on(device)
        return calibration(predict(model, on_device, batch_size), on_device.y, bins)

    clean = evaluate(subset["x"])["acc"]
    accuracy: dict[str, dict[str, float]] = {}
    eces: list[float] = []
    for name in names:
        arrays = _load(paths.CORRUPTED / paths.corrupted_file(name))
        accuracy[name] = {}
        for severity, images in zip(arrays["severities"].tolist(), arrays["x"]):
            result = evaluate(images)
            accuracy[name][f"s{severity}"] = result["acc"]
            if name in STANDARD:
                eces.append(result["ece"])
    standard = [accuracy[n] for n in STANDARD if n in accuracy]
    if not standard:
        return {"clean_acc": clean, "corruptions": accuracy}
    severities = list(standard[0])
    mca = sum(sum(a.values()) for a in standard) / (len(standard) * len(severities))
    return {
        "clean_acc": clean,
        "mca": mca,
        "relative": mca / clean if clean else float("nan"),
        "ece": sum(eces) / len(eces),
        "by_severity": {s: sum(a[s] for a in standard) / len(standard) for s in severities},
        "corruptions": accuracy,
    }
