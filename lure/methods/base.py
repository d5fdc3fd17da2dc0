"""What every way to forget has in common.

A method is one class: its settings (a params.yaml section, validated by pydantic, each setting
described once) and what it does when chunk k arrives, through two calls:

- `forget(model, boundary)`: before relearning, change the model in place and return, per
  parameter tensor, the share of its old values it forgot (the fraction of its entries
  re-initialised; 1 - shrink for shrink & perturb);
- `relearning(model, boundary)`: optionally, a hook that acts inside the training loop while the
  chunk is relearned (continual backprop); it reports what it reset and the state to carry into
  the next chunk.

Every method also takes `mitigate`, the stability-gap mitigations, which act through hooks of the
loop too (lure.methods.mitigations).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from pydantic import Field

from lure.config import Strict
from lure.images import Images
from lure.methods.mitigations import Mitigations
from lure.models import Network
from lure.optim import State
from lure.train import Hook

Reset = dict[str, float]  # per parameter tensor: the share of its old values forgotten


@dataclass
class Boundary:
    """What a method may use when chunk k arrives."""

    initial: dict[str, torch.Tensor]  # the run's saved initial weights, before chunk 1
    fresh_model: Callable[[], Network]  # a newly drawn model of the same architecture (seeded)
    replay: Images  # what the new chunk trains on under the replay mode, in the official order (on the device)
    new: Images  # the new chunk's own training images (on the device)
    generator: torch.Generator  # the method's random draws at this chunk
    run_generator: torch.Generator  # the same draws at every chunk of a run (a split fixed for the run)
    optimizer: State = field(default_factory=dict)  # the carried optimiser state; a method may clear entries
    state: dict = field(default_factory=dict)  # the method's state from the previous chunk's checkpoint
    # the training's augmentation of a batch of stored images, with draws of its own (None: none)
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None


class MethodHook(Hook):
    """A method's hook in the training loop, with what it did to report and carry."""

    @property
    def reset(self) -> Reset:
        """Per tensor, the share of its entries reset during the chunk."""
        return {}

    def state(self) -> dict:
        """What to carry into the next chunk (saved in the checkpoint). Under "networks", other
        networks by name (weights as the model's state dict), which the stages evaluate beside the
        model: their accuracies go to the metrics as networks_val_acc and networks_test_acc."""
        return {}


class Method(Strict):
    """Base of every method's settings and behaviour. A subclass sets `kind` to a Literal of its
    name and its docstring to what it does (`lure params` prints both)."""

    kind: str
    mitigate: Mitigations = Field(Mitigations(), description="stability-gap mitigations (Harun & Kanan 2023), "
                                  "all off by default")

    registry: ClassVar[dict[str, type[Method]]] = {}

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if "kind" not in cls.__annotations__:  # a shared base (Mask) or a subclass of a method: no new kind
            return
        kind = cls.model_fields["kind"].default
        if kind in Method.registry:
            raise TypeError(f"method kind {kind!r} is declared twice: {Method.registry[kind]} and {cls}")
        Method.registry[kind] = cls

    def forget(self, model: Network, boundary: Boundary) -> Reset:
        """When chunk k arrives: change `model` in place; return the share reset per tensor."""
        return {}

    def relearning(self, model: Network, boundary: Boundary) -> MethodHook | None:
        """A hook that acts while the chunk is relearned, if the method has one."""
        return None
