"""Self-Normalized Resets (Farias & Jozefiak, ICLR 2025; ajozefiak/SelfNormalizedResets, in JAX;
FIRE's PyTorch port, vision/interventions/node_reset/snr.py): reset a unit that has been silent for
longer than its own inter-firing times make likely."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field

from lure import distributed
from lure.config import Fraction
from lure.device import world_size
from lure.methods.base import Boundary, Method, MethodHook
from lure.methods.units import Recycler, recycle, unit_count
from lure.models import Network
from lure.train import Trainer


class Snr(Method):
    """After every update, per layer of hidden units: a unit fired if any of its post-ReLU
    activations over the last `window` training images (FIRE's analysis window) is positive. A unit
    that fired adds its age (images since it last fired, at most tau_max) to its histogram and
    restarts at 0; one that did not ages by the window's images. Every `threshold_every` updates,
    from the first, each unit's threshold becomes the `percentile` point of its histogram where that
    is below the threshold, else the threshold times `expansion`, within [window, tau_max], and the
    histograms restart. Units whose age reaches their threshold are recycled (incoming weights drawn
    afresh, BatchNorm entries reset, outgoing weights and their optimiser buffers zeroed; their age
    counted in the histogram, then 0: what FIRE's port means to do, though its boolean-mask writes
    leave outgoing weights and Adam's moments as they were). FIRE's port's rules and defaults; its
    units are a layer's pre-BatchNorm outputs, lure's are the units' own activations, after
    BatchNorm and the ReLU (the official code's, on MLPs). Ages, histograms and thresholds carry
    over from chunk to chunk."""

    kind: Literal["snr"] = "snr"
    percentile: Fraction = Field(0.98, description="the point of a unit's inter-firing times its threshold "
                                 "contracts to (FIRE's default 0.98; its ResNet-18 runs 0.92)")
    threshold_every: int = Field(16, ge=1, description="updates between the thresholds' updates (FIRE: 16)")
    expansion: float = Field(2.0, gt=1.0, description="the factor a threshold grows by when the percentile point "
                             "is not below it (FIRE: 2)")
    tau_max: int = Field(20000, ge=1, description="the longest age counted, and the largest threshold, in images "
                         "(FIRE: 20000; thresholds start at half of it)")
    window: int = Field(512, ge=1, description="the training images a unit's firing is judged on, the last "
                        "ones seen (FIRE's n_analysis_samples: 512)")

    def relearning(self, model: Network, boundary: Boundary) -> MethodHook:
        return SelfNormalizedResets(model, self, boundary.generator, boundary.state)


def watch_peaks(model: Network, record: Callable[[int, torch.Tensor], None]) -> list:
    """Call record(layer, peaks) on every training forward pass, per layer of units: peaks (images,
    units) is each unit's largest post-ReLU activation in each image (over its positions)."""
    def hook(i: int):
        def on_forward(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if module.training:
                h = output.detach().relu()
                record(i, h.amax(dim=tuple(range(2, h.dim()))) if h.dim() > 2 else h)
        return on_forward

    return [model.get_submodule(u.bn or u.conv).register_forward_hook(hook(i)) for i, u in enumerate(model.units)]


class SelfNormalizedResets(Recycler):
    """SNR's state per layer of units: the activations in the window, ages, histograms and thresholds."""

    def __init__(self, model: Network, settings: Snr, generator: torch.Generator, state: dict) -> None:
        self.model, self.s, self.generator = model, settings, generator
        sizes = [unit_count(model, u) for u in model.units]
        self.ages = state.get("ages", [torch.zeros(n, dtype=torch.long) for n in sizes])
        self.hist = [unpack(h, n, settings.tau_max + 1) for h, n in zip(state["hist"], sizes)] if "hist" in state \
            else [torch.zeros(n, settings.tau_max + 1, dtype=torch.long) for n in sizes]
        self.tau = state.get("tau", [torch.full((n,), max(1, settings.tau_max // 2), dtype=torch.long) for n in sizes])
        self.step = state.get("step", 0)
        self.window: list[torch.Tensor | None] = [None] * len(sizes)  # per image, each unit's largest activation
        self.touched: dict[str, torch.Tensor] = {}
        self.handles: list = []

    def _record(self, i: int, peaks: torch.Tensor) -> None:
        # under DDP each rank keeps its share of the window, of its own slices of the batches
        keep = max(1, self.s.window // world_size())
        previous = self.window[i] if self.window[i] is not None else peaks[:0]
        self.window[i] = torch.cat([previous, peaks])[-keep:]

    def before_fit(self, trainer: Trainer) -> None:
        self.handles = watch_peaks(self.model, self._record)

    @torch.no_grad()
    def after_step(self, trainer: Trainer) -> None:
        s = self.s
        for i, peaks in enumerate(self.window):
            # the window's images and the units that fired in them, over the ranks: every rank alike
            counts = distributed.all_sum(torch.cat([(peaks > 0).any(dim=0).long(), peaks.new_tensor([len(peaks)],
                                                                                                   dtype=torch.long)]))
            counts = counts.cpu()  # the host decides what to reset (a wait per update on a GPU)
            fired, images = counts[:-1] > 0, int(counts[-1])
            age = self.ages[i]
            self.count(i, fired, age)
            self.ages[i] = torch.where(fired, 0, age + images)
            if self.step % s.threshold_every == 0:
                self.tau[i] = self.updated_thresholds(i, images)
        for i, units in enumerate(self.model.units):
            due = self.ages[i] >= self.tau[i]
            self.count(i, due, self.ages[i])
            self.ages[i] = torch.where(due, 0, self.ages[i])
            recycle(self.model, units, due.nonzero().flatten(), self.generator, trainer.optimizer.state, self.touched)
        self.step += 1

    def count(self, i: int, events: torch.Tensor, age: torch.Tensor) -> None:
        """Add the ages at `events` (firings, or resets) to the histograms, at most tau_max."""
        units = events.nonzero().flatten()
        self.hist[i][units, age[units].clamp_max(self.s.tau_max)] += 1

    def updated_thresholds(self, i: int, images: int) -> torch.Tensor:
        hist, tau = self.hist[i], self.tau[i]
        cdf = torch.cumsum(hist[:, 1:], dim=1)
        share = cdf / (hist[:, 1:].sum(dim=1, keepdim=True) + 1e-8)
        point = torch.argmax((share >= self.s.percentile).long(), dim=1) + 1
        grown = (self.s.expansion * tau).long()
        self.hist[i].zero_()
        return torch.where(point < tau, point, grown).clamp(min=images, max=self.s.tau_max)

    def state(self) -> dict:
        return {"ages": self.ages, "hist": [pack(h) for h in self.hist], "tau": self.tau, "step": self.step}


def pack(hist: torch.Tensor) -> torch.Tensor:
    """A histogram's nonzero entries as rows (unit, age, count): it restarts every threshold_every
    updates, so few are set, where the whole (units, tau_max + 1) table is 160 kB a unit."""
    where = hist.nonzero()
    return torch.cat([where, hist[where[:, 0], where[:, 1]][:, None]], dim=1)


def unpack(rows: torch.Tensor, units: int, ages: int) -> torch.Tensor:
    hist = torch.zeros(units, ages, dtype=torch.long)
    hist[rows[:, 0], rows[:, 1]] = rows[:, 2]
    return hist
