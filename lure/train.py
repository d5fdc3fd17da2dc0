"""The training loop: one chunk's optimisation.

fit() trains a model in place on one chunk's training images (under the replay mode) with
train.optimizer (lure.optim), continuing from the optimiser state the previous chunk carried,
on a schedule that restarts at every chunk (a warm-up, then steps at milestones counted in the
chunk's epochs or a cosine), the gradient clipped if asked; the checkpoint with the best
validation accuracy ends the chunk. Images stay on the device as uint8; every random draw of an
epoch is made at once on the CPU and copied over once, so nothing in the inner loop waits on the
host. Hooks run at fixed points of the loop: a method's (continual backprop), a stability-gap
mitigation's, the continual evaluation's.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lure import distributed
from lure.augment import crop_flip, draw_crop_flip, draw_resized_crop_flip, resized_crop_flip
from lure.config import TrainSettings
from lure.device import world_size
from lure.errors import LureError
from lure.images import Images
from lure.models import accuracy, as_float
from lure.optim import State, make_optimizer


def lr_at(settings: TrainSettings, epoch: int, update: int, total: int) -> float:
    """The LR of a chunk's update `update` (from 0, of `total`) in its epoch `epoch` (from 0): a
    linear warm-up from 0 over the first `warmup` share of the updates (Hare & Tortoise's rule: the
    first update's LR is 0), then the step schedule (x lr_gamma at each milestone epoch passed) or a
    cosine from lr down to 0 over the updates after the warm-up."""
    warm = int(settings.warmup * total)
    if update < warm:
        return settings.lr * update / warm
    if settings.schedule == "cosine":
        return settings.lr * 0.5 * (1 + math.cos(math.pi * (update - warm) / max(1, total - warm)))
    return settings.lr * settings.lr_gamma ** sum(epoch >= m for m in settings.lr_milestones)


def smallest_batch(world: int) -> int:
    """Images a batch needs to be trained on: 2, as BatchNorm cannot train on one image, and under
    DDP one per rank (a rank without images would leave the others alone in a collective)."""
    return max(2, world)


def updates_per_epoch(n: int, batch_size: int, world: int = 1) -> int:
    return n // batch_size + (n % batch_size >= smallest_batch(world))  # a smaller last batch is skipped


def not_finite(model: nn.Module) -> list[str]:
    """The names of the model's parameters that hold a NaN or an infinity, found with one wait on
    the device (the training loop checks once per epoch, relearn after a method forgets)."""
    named = list(model.named_parameters())
    finite = torch.stack([w.isfinite().all() for _, w in named]).tolist()
    return [name for (name, _), ok in zip(named, finite) if not ok]


class NotFinite(LureError):
    """The loss or the weights stopped being finite: the run diverged."""

    def __init__(self, what: str, update: int, where: str = "") -> None:
        when = f"at update {update}" if what == "loss" else f"by update {update}"  # weights: checked per epoch
        super().__init__(f"the {what} {'is' if what == 'loss' else 'are'} not finite {when}"
                         + (f" ({where})" if where else ""))
        self.what, self.update = what, update

    def of_run(self, run: str, lr: float) -> LureError:
        """The user's message: which run diverged where, and what to try."""
        return LureError(f"{run}: {self}; nothing was written. Lower train.lr ({lr:g}), or look at the data and "
                         f"the other settings")


@dataclass
class Epoch:
    """What one epoch did: its updates and images, its mean loss and its accuracy on the training
    batches as they were trained on (augmented), and its speed."""

    updates: int
    images: int
    loss: float
    train_acc: float
    images_per_s: float
    val_acc: float | None = None  # set by fit where it selects on validation accuracy


class Hook:
    """Code that runs inside the loop. Each method is called with the Trainer, whose state
    (model, optimizer, lr, loss, updates so far) it may read and change."""

    def before_fit(self, trainer: Trainer) -> None:
        """Once, before the first update."""

    def before_step(self, trainer: Trainer) -> None:
        """Before every update, once the schedule has set trainer.optimizer.lr."""

    def after_step(self, trainer: Trainer) -> None:
        """After every update; trainer.updates already counts it."""

    def after_epoch(self, trainer: Trainer, epoch: int, stats: Epoch) -> None:
        """After every epoch (numbered from 1), with what it did."""

    def after_fit(self, trainer: Trainer) -> None:
        """Once, after the last epoch, before the best checkpoint is restored."""


class Trainer:
    """One chunk's optimisation: the model, its optimiser, its loss, and how batches reach it."""

    def __init__(self, model: nn.Module, settings: TrainSettings, device: torch.device, epoch_updates: int,
                 state: State | None = None, hooks: Sequence[Hook] = ()) -> None:
        self.model, self.settings, self.hooks = model, settings, hooks
        self.bf16, self.channels_last = fast_path(settings, device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.world = world_size()
        forward = distributed.data_parallel(model, device) if self.world > 1 else model
        self.forward = torch.compile(forward) if settings.compile else forward
        self.optimizer = make_optimizer(list(model.named_parameters()), settings, state)
        self.loss = F.cross_entropy  # (logits, labels) -> loss; a hook may replace it (SGM's soft targets)
        self.penalties: list[Callable[[], torch.Tensor]] = []  # terms a hook adds to it (L2 Init, Parseval)
        self.device_type = device.type
        self.lr = settings.lr  # the schedule's LR for the coming update
        self.updates = 0  # optimizer steps so far in this chunk
        self.epoch_updates = epoch_updates  # steps in each of settings.epochs

    def objective(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """What an update minimises: the loss, plus every penalty computed from the live weights in
        float32, whatever autocast the forward pass runs under (the regularisers' code has none)."""
        loss = self.loss(logits, labels)
        if self.penalties:
            with torch.autocast(self.device_type, enabled=False):
                loss = loss + sum(term() for term in self.penalties)
        return loss

    def epoch(self, train: Images, generator: torch.Generator, number: int = 0) -> Epoch:
        """Epoch `number` (from 0) of the chunk: one pass over `train` in a seeded order. Raises
        NotFinite where the loss or the weights stopped being finite (checked once per epoch: a check
        per update would wait on the GPU). Under DDP each rank trains on its slice of every batch of
        the same order (lure.distributed)."""
        s, device = self.settings, train.y.device
        self.model.train()
        start = time.perf_counter()
        # Every random draw of the epoch at once, then one copy to the device: no host work per batch.
        host_order = torch.randperm(len(train), generator=generator)
        order = host_order.to(device)
        if s.augment == "crop_flip":
            offsets, flips = (t.to(device) for t in draw_crop_flip(len(train), s.crop_padding, generator))
        elif s.augment == "resized_crop_flip":
            boxes, flips = (t.to(device) for t in draw_resized_crop_flip(len(train), *train.x.shape[2:], generator))
        # streamed images are read on the host: with the host's copy of the order, so that no batch
        # waits for the GPU to say which images it takes
        streamed = not isinstance(train.x, torch.Tensor)
        updates = images = 0
        losses, correct = [], torch.zeros((), dtype=torch.long, device=device)
        for first in range(0, len(train), s.batch_size):  # the batch's first position in the order
            size = min(s.batch_size, len(train) - first)
            if size < smallest_batch(self.world):
                continue
            shard = distributed.shard(size)  # the whole batch in one process
            position = slice(first + shard.start, first + shard.stop)
            x = train.x[host_order[position]] if streamed else train.x[order[position]]
            y = train.y[order[position]]
            if s.augment == "crop_flip":
                x = crop_flip(x, s.crop_padding, offsets[position], flips[position])
            elif s.augment == "resized_crop_flip":
                x = resized_crop_flip(x, boxes[position], flips[position])
            elif self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16):
                logits = self.forward(as_float(x))
                loss = self.objective(logits, y)
            share = len(y) / size  # of the batch, this rank's (1.0 in one process: exact)
            losses.append(loss.detach().float() * share)  # summed over the ranks: the batch's mean loss
            correct += (logits.detach().argmax(1) == y).sum()
            self.lr = lr_at(s, number, self.updates, s.epochs * self.epoch_updates)
            self.optimizer.lr = self.lr
            for hook in self.hooks:
                hook.before_step(self)
            self.optimizer.zero_grad()
            # DDP averages the ranks' gradients: weighted by its share of the batch, each rank's mean
            # loss averages to the whole batch's mean, as in one process
            (loss * (share * self.world)).backward()
            if s.clip_grad_norm is not None:  # of the whole batch's gradient, the same on every rank
                torch.nn.utils.clip_grad_norm_(self.optimizer.params, s.clip_grad_norm)
            self.optimizer.step()
            self.updates += 1
            updates += 1
            images += size
            for hook in self.hooks:
                hook.after_step(self)
        # the batches' losses and the correct count, summed over the ranks: the same on every rank
        loss = distributed.all_sum(torch.stack(losses)) if losses else torch.zeros(0, device=device)
        correct_count = int(distributed.all_sum(correct))
        finite, where = torch.isfinite(loss), f"epoch {number + 1} of {s.epochs}"
        if losses and not bool(finite.all()):
            raise NotFinite("loss", self.updates - updates + 1 + int((~finite).nonzero()[0]), where)
        if not_finite(self.model):
            raise NotFinite("weights", self.updates, where)
        seconds = time.perf_counter() - start
        return Epoch(updates, images, float(loss.mean()) if losses else float("nan"), correct_count / max(images, 1),
                     images / seconds)


@dataclass
class FitResult:
    updates: int  # optimizer steps
    images: int  # training images processed
    val_history: list[float]  # validation accuracy after each epoch (empty with select: last)
    best_epoch: int  # 1-based epoch whose weights were kept
    train_acc: float
    val_acc: float
    seconds: float
    state: State  # the optimiser's state after the last step (lure.optim), on the CPU
    epochs_run: int | None = None  # set under train.stop_at_train_acc: the epochs it took
    epoch_train_acc: float | None = None  # ... and the last epoch's accuracy on its batches, which the rule tests

    def metrics(self) -> dict[str, float | int]:
        """What the chunk's training gives, the same in every run of the same seed (the time apart)."""
        return {
            "train_acc": self.train_acc,
            "val_acc": self.val_acc,
            "gen_gap": self.train_acc - self.val_acc,
            "updates": self.updates,
            "images": self.images,
            "best_epoch": self.best_epoch,
            **({"epochs_run": self.epochs_run, "epoch_train_acc": self.epoch_train_acc}
               if self.epochs_run is not None else {}),
        }


def fit(model: nn.Module, train: Images, val: Images, settings: TrainSettings, generator: torch.Generator,
        state: State | None = None, hooks: Sequence[Hook] = ()) -> FitResult:
    """Train `model` in place for one chunk, starting from the carried optimiser `state` (if any);
    it ends holding the selected checkpoint. `generator` draws the batch order and augmentation."""
    start = time.perf_counter()
    trainer = Trainer(model, settings, train.y.device,
                      updates_per_epoch(len(train), settings.batch_size, world_size()), state, hooks)
    for hook in hooks:
        hook.before_fit(trainer)
    updates = images = 0
    history: list[float] = []
    best_epoch, best_state = 0, None
    epochs_run, epoch_train_acc = 0, 0.0
    for epoch in range(settings.epochs):
        stats = trainer.epoch(train, generator, epoch)
        updates, images = updates + stats.updates, images + stats.images
        if settings.select == "best_val":
            history.append(accuracy(model, val))
            stats.val_acc = history[-1]
            if history[-1] > max(history[:-1], default=-1.0):  # the earliest best epoch wins ties
                best_epoch, best_state = epoch + 1, copy.deepcopy(model.state_dict())
        for hook in hooks:
            hook.after_epoch(trainer, epoch + 1, stats)
        epochs_run, epoch_train_acc = epoch + 1, stats.train_acc
        if settings.stop_at_train_acc is not None and stats.train_acc >= settings.stop_at_train_acc:
            break  # the same on every rank: the accuracy is summed over them
    for hook in hooks:
        hook.after_fit(trainer)
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        best_epoch = epochs_run
    model.to(memory_format=torch.contiguous_format)

    return FitResult(
        updates=updates,
        images=images,
        val_history=history,
        best_epoch=best_epoch,
        train_acc=accuracy(model, train),
        val_acc=accuracy(model, val),
        seconds=time.perf_counter() - start,
        state=trainer.optimizer.carried_state(),
        epochs_run=epochs_run if settings.stop_at_train_acc is not None else None,
        epoch_train_acc=epoch_train_acc if settings.stop_at_train_acc is not None else None,
    )


def fast_path(settings: TrainSettings, device: torch.device) -> tuple[bool, bool]:
    """(bf16 autocast, channels_last): on by default on CUDA, where they pay; fp32 on the CPU."""
    bf16 = settings.precision == "bf16" or (settings.precision == "auto" and device.type == "cuda")
    return bf16, device.type == "cuda"
