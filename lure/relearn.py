"""When chunk k arrives: the method forgets (lure.methods), then the model relearns on chunk k
under the replay mode (lure.train.fit), evaluated as it goes on held-out images of every chunk so
far (the stability gap, lure.stability). One run seed drives the forgetting draws and the batch
order; the data (replay reservoir, held-out images) follows `seed`, shared by all runs."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lure import distributed, paths, streams
from lure.augment import random_crop_flip, random_resized_crop_flip
from lure.checkpoints import Checkpoint, cpu_state, load_checkpoint
from lure.chunks import Chunk, load_chunks, load_meta, noise_metrics
from lure.config import Params
from lure.device import pick_device, provenance
from lure.errors import LureError
from lure.images import Images
from lure.methods import Boundary, load_method
from lure.models import Network, accuracy, model_for
from lure.placement import place
from lure.progress import Log, Progress
from lure.replay import replay
from lure.stability import Curves, gap_metrics
from lure.train import Hook, NotFinite, Trainer, fit, not_finite


@dataclass
class Relearned:
    checkpoint: Checkpoint
    metrics: dict
    summary: str


def relearn(p: Params, name: str, seed: int, k: int, log_dir: Path) -> Relearned:
    """Chunk k arrives: method `name` forgets, then the model relearns on chunk k; the training
    and continual-evaluation curves go to `log_dir` as they are measured."""
    method = load_method(p, name)
    p.check_chunk(k)
    p.check_run_seed(seed)
    run = f"methods.{name}, seed {seed}, chunk {k}"
    device = pick_device(p.train)
    meta, chunks = load_meta(), load_chunks(k)
    sets = replay(chunks, p.replay, p.seed)
    placed = place({"train": sets.train, "val": sets.val, "new": chunks[-1].train}, device, p.train.placement)
    train, val = placed["train"], placed["val"]

    model = model_for(p.model, meta, device)
    previous = load_checkpoint(paths.model(name, seed, k - 1))
    model.load_state_dict(previous.weights)

    def fresh_model() -> Network:
        with streams.fresh_model(seed, k, name):
            return model_for(p.model, meta, device)

    initial = {key: value.to(device) for key, value in load_checkpoint(paths.init_model(seed)).weights.items()}
    augment = scoring_augment(p, streams.scoring_augment(seed, k, name))
    boundary = Boundary(initial=initial, fresh_model=fresh_model, replay=train, new=placed["new"],
                        generator=streams.forgetting(seed, k, name), run_generator=streams.run_split(seed, name),
                        optimizer=previous.optimizer, state=previous.method_state, augment=augment)
    with Log(log_dir) as log:
        probe = None
        if p.stability.every:
            probe = Probe(model, held_out(chunks, p.stability.samples, p.seed, device), p.stability.every, log)
            probe.measure(0)  # before the method forgets

        # Forget, then relearn with the method's hook (if any), the mitigations', the probe and the
        # progress, in that order: the probe measures what the others did at each step.
        start = time.perf_counter()
        try:
            reset = method.forget(model, boundary)
        except LureError as err:  # a setting that does not fit the model, e.g. a layer name
            raise LureError(f"methods.{name}.{err}") from None
        if bad := not_finite(model):
            raise LureError(f"{run}: forgetting left weights that are not finite ({', '.join(bad[:3])}); nothing "
                            f"was written: look at the method's settings")
        method.mitigate.at_boundary(model, reset, train)
        # under DDP every rank forgot alike, from the same data and draws: check it
        distributed.check_same("the forgetting step", {**{f"model.{n}": t for n, t in model.state_dict().items()},
                               **{f"{kind}.{n}": t for kind, by_name in boundary.optimizer.items()
                                  for n, t in by_name.items()}}, reset)
        during = method.relearning(model, boundary)
        forget_s = time.perf_counter() - start
        hooks: list[Hook] = ([during] if during else []) + method.mitigate.hooks() + ([probe] if probe else [])
        try:
            result = fit(model, train, val, p.train, streams.batch_order(seed, k), boundary.optimizer,
                         [*hooks, Progress(run, log)])
        except NotFinite as err:
            raise err.of_run(run, p.train.lr) from None
        log.close({"forget_s": forget_s, "train_s": result.seconds})
    if during:
        reset = {**reset, **during.reset}
    networks = other_networks(p, meta, device, during.state() if during else {}, val)

    reset_total, reset_by_layer = reset_shares(model, reset)
    stability = gap_metrics(probe.curves, k) if probe else None
    metrics = {
        **result.metrics(),
        **noise_metrics(chunks[-1]),
        "reset_fraction": reset_total,
        "reset_by_layer": reset_by_layer,
        "reset": reset,
        **({"stability": stability} if stability else {}),
        **({"networks_val_acc": networks} if networks else {}),
        "provenance": provenance(p, seed, device),
    }
    gap = f", stability gap {stability['gap_depth']:.3f}" if stability else ""
    return Relearned(
        Checkpoint(cpu_state(model), result.state, during.state() if during else {}), metrics,
        f"{name} seed {seed} chunk {k}: reset {reset_total:.3f} of the weights, val acc {result.val_acc:.4f} "
        f"after {result.updates} updates on {device}{gap}")


def other_networks(p: Params, meta: dict, device: torch.device, state: dict, val: Images) -> dict[str, float]:
    """The validation accuracy of each other network the method carries (its state's "networks",
    e.g. Hare & Tortoise's tortoise), beside the model's."""
    accuracies = {}
    for name, weights in state.get("networks", {}).items():
        network = model_for(p.model, meta, device)
        network.load_state_dict(weights)
        accuracies[name] = accuracy(network, val)
    return accuracies


def reset_shares(model: Network, reset: dict[str, float]) -> tuple[float, dict[str, float]]:
    """The share of all parameters reset, and of each of the architecture's layers (entries
    weighted by count), from a method's per-tensor `reset`."""
    sizes = {name: p.numel() for name, p in model.named_parameters()}

    def share(names: list[str]) -> float:
        return sum(reset.get(n, 0.0) * sizes[n] for n in names) / sum(sizes[n] for n in names)

    by_layer = {layer: share([n for n in sizes if n.startswith(tuple(f"{path}." for path in module_paths))])
                for layer, module_paths in model.layers.items()}
    return share(list(sizes)), by_layer


# --- the continual evaluation while a chunk is relearned -----------------------------------------


def scoring_augment(p: Params, generator: torch.Generator):
    """The training augmentation as a function of a batch, for the methods that score on augmented
    images as the official LURE code does (None without augmentation)."""
    if p.train.augment == "crop_flip":
        return functools.partial(random_crop_flip, generator=generator, padding=p.train.crop_padding)
    if p.train.augment == "resized_crop_flip":
        return functools.partial(random_resized_crop_flip, generator=generator)
    return None


def held_out(chunks: list[Chunk], samples: int, seed: int, device: torch.device) -> list[Images]:
    """A fixed seeded subset of each chunk's validation images, the same in every run."""
    subsets = []
    for k, chunk in enumerate(chunks, start=1):
        keep = streams.held_out(seed, k).permutation(len(chunk.val))[:samples]
        subsets.append(chunk.val.take(np.sort(keep)).on(device))
    return subsets


class Probe(Hook):
    """Evaluates `model` on the held-out images of the earlier chunks and of the new one (the last):
    `measure(0)` before the method forgets, then, as a hook of the loop, before the first update
    and every `every` updates; each measurement goes to the log (old_acc, new_acc) as it is made."""

    def __init__(self, model: nn.Module, held_out: list[Images], every: int, log: Log | None = None) -> None:
        self.model, self.old, self.new, self.every, self.log = model, held_out[:-1], held_out[-1], every, log
        self.curves = Curves()

    def measure(self, step: int) -> None:
        correct = {i: accuracy(self.model, d) * len(d) for i, d in enumerate(self.old, start=1)}
        self.curves.add(step, {i: c / len(self.old[i - 1]) for i, c in correct.items()},
                        old=sum(correct.values()) / sum(len(d) for d in self.old), new=accuracy(self.model, self.new))
        if self.log:
            self.log.log(step, old_acc=self.curves.old[-1], new_acc=self.curves.new[-1])

    def before_fit(self, trainer: Trainer) -> None:
        self.measure(0)

    def after_step(self, trainer: Trainer) -> None:
        if trainer.updates % self.every == 0:
            self.measure(trainer.updates)
