"""Checkpoints: a model's weights and what it carries into the next chunk."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from lure.errors import LureError
from lure.io import unreadable, write_bytes
from lure.optim import State


@dataclass
class Checkpoint:
    weights: dict[str, torch.Tensor]  # the model's parameters and buffers, on the CPU
    optimizer: State = field(default_factory=dict)  # the optimiser's state (lure.optim), carried to the next chunk
    method_state: dict = field(default_factory=dict)  # a method's own state (continual backprop's)


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the model's weights and buffers."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def save_checkpoint(path: str | Path, checkpoint: Checkpoint) -> None:
    # Serialised in memory: torch.save names the archive's records after the file it writes,
    # and the temporary file's random name would make equal checkpoints differ byte-wise.
    buffer = io.BytesIO()
    torch.save({"model": checkpoint.weights, "optimizer": checkpoint.optimizer,
                **({"method_state": checkpoint.method_state} if checkpoint.method_state else {})}, buffer)
    write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise LureError(f"{path} is missing: run the stage that writes it (dvc repro)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        return Checkpoint(state["model"], state["optimizer"], state.get("method_state", {}))
    except (RuntimeError, OSError, EOFError, ValueError, KeyError, TypeError) as err:  # torch raises many kinds
        raise unreadable(path, err) from None
