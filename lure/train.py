"""Training and inference: one readable loop, data held as tensors on the device.

The schedule restarts at every chunk (LR back to its initial value, milestones counted in the
chunk's epochs); the checkpoint with the best validation accuracy ends the chunk.
"""

from __future__ import annotations

import copy
import io
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lure.augment import crop_flip, draw_crop_flip
from lure.config import Mitigations, Params, TrainParams
from lure.data import Chunk, Split, replay_sets
from lure.errors import LureError
from lure.io import write_bytes
from lure.mitigations import SoftTargets


def pick_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise LureError("train.device: cuda was asked for but no CUDA device is available (use auto or cpu)")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda":  # same seed, same GPU -> same results (at some cost in speed)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
    return torch.device(choice)


# Independent random streams (with the seed and the chunk number) for each purpose; SPLIT_STREAM
# without the chunk number: draws that stay the same for a whole run.
SHUFFLE_STREAM, FORGET_STREAM, FRESH_MODEL_STREAM, SPLIT_STREAM = 0, 1, 2, 3


def provenance(seed: int, run_seed: int, device: torch.device) -> dict[str, str | int]:
    """What a result was computed with: recorded beside every metric (`seed`: the data's)."""
    import platform

    from lure import __version__

    return {"seed": seed, "device": str(device), "torch": torch.__version__, "python": platform.python_version(),
            "lure": __version__, "run_seed": run_seed}


def derive_seed(*key: int) -> int:
    """One seed from a tuple of ints (e.g. seed, chunk, purpose): independent streams per key."""
    return int(np.random.SeedSequence(list(key)).generate_state(1, np.uint64)[0] >> 1)


def seeded(*key: int) -> torch.Generator:
    """A CPU generator for the stream named by `key`."""
    return torch.Generator().manual_seed(derive_seed(*key))


@dataclass
class Data:
    """A split as tensors on the device: uint8 images, int64 labels."""

    x: torch.Tensor
    y: torch.Tensor

    @staticmethod
    def of(split: Split, device: torch.device) -> Data:
        return Data(torch.from_numpy(split.x).to(device), torch.from_numpy(split.y).to(device))

    def __len__(self) -> int:
        return len(self.y)

    def take(self, index: torch.Tensor) -> Data:
        return Data(self.x[index], self.y[index])


def replay_data(chunks: list[Chunk], params: Params, device: torch.device) -> tuple[Data, Data, Data]:
    """(train, validation) for the last of `chunks` under the replay mode, and that chunk's own
    training images, as tensors on the device."""
    sets = replay_sets(chunks, params.replay.mode, params.replay.buffer_size, params.replay.buffer_val_size, params.seed)
    return Data.of(sets.train, device), Data.of(sets.val, device), Data.of(chunks[-1].train, device)


def as_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255)


@torch.no_grad()
def predict(model: nn.Module, data: Data, batch_size: int = 1000) -> torch.Tensor:
    """Logits for every image, in eval mode."""
    was_training = model.training
    model.eval()
    logits = torch.cat([model(as_float(x)) for x in data.x.split(batch_size)]) if len(data) else torch.empty(0)
    model.train(was_training)
    return logits


def accuracy(model: nn.Module, data: Data, batch_size: int = 1000) -> float:
    if len(data) == 0:
        return float("nan")
    return (predict(model, data, batch_size).argmax(1) == data.y).float().mean().item()


@dataclass
class FitResult:
    updates: int  # optimizer steps
    images: int  # training images processed
    val_history: list[float]  # validation accuracy after each epoch (empty with select: last)
    best_epoch: int  # 1-based epoch whose weights were kept
    train_acc: float
    val_acc: float
    seconds: float
    momentum: dict[str, torch.Tensor]  # SGD momentum after the last step, by parameter name

    def metrics(self) -> dict[str, float | int]:
        return {
            "train_acc": self.train_acc,
            "val_acc": self.val_acc,
            "gen_gap": self.train_acc - self.val_acc,
            "updates": self.updates,
            "images": self.images,
            "best_epoch": self.best_epoch,
            "train_s": round(self.seconds, 3),
        }


class SGD:
    """SGD with momentum and weight decay, PyTorch's update rule (dampening 0, no Nesterov):
    g <- grad + wd * theta;  buf <- momentum * buf + g;  theta <- theta - lr * buf.

    Written out because constructing torch.optim.SGD imports torch._dynamo, ~4.5 s per
    process on a 2-core machine: most of a small stage's run time.
    """

    def __init__(self, named_params: list[tuple[str, nn.Parameter]], lr: float, momentum: float, weight_decay: float,
                 buffers: dict[str, torch.Tensor] | None = None) -> None:
        self.names = [n for n, _ in named_params]
        self.params = [p for _, p in named_params]
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        buffers = buffers or {}
        self.buffers = [buffers[n].to(p.device).clone() if n in buffers else torch.zeros_like(p)
                        for n, p in named_params]

    @torch.no_grad()
    def step(self) -> None:
        live = [(p, b) for p, b in zip(self.params, self.buffers) if p.grad is not None]
        if not live:
            return
        params, buffers = [p for p, _ in live], [b for _, b in live]
        grads = [p.grad for p in params]
        if self.weight_decay:
            torch._foreach_add_(grads, params, alpha=self.weight_decay)
        torch._foreach_mul_(buffers, self.momentum)
        torch._foreach_add_(buffers, grads)
        torch._foreach_add_(params, buffers, alpha=-self.lr)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def momentum_state(self) -> dict[str, torch.Tensor]:
        return {n: b.detach().cpu().clone() for n, b in zip(self.names, self.buffers)}

    def momentum_buffers(self) -> dict[str, torch.Tensor]:
        """The live momentum buffers by parameter name (a method may clear entries it resets)."""
        return dict(zip(self.names, self.buffers))


def lr_at(params: TrainParams, epoch: int) -> float:
    """Step schedule within a chunk (epoch counted from 0): LR x gamma at each milestone passed."""
    return params.lr * params.lr_gamma ** sum(epoch >= m for m in params.lr_milestones)


Probe = Callable[[int], None]  # called with the number of updates so far, e.g. to evaluate
AfterStep = Callable[[SGD], None]  # called after every optimizer step, e.g. to replace units


class Trainer:
    """One chunk's optimisation: the model, its SGD, its loss, and how batches reach it."""

    def __init__(self, model: nn.Module, params: TrainParams, device: torch.device,
                 momentum: dict[str, torch.Tensor] | None = None, *, soft_targets: SoftTargets | None = None,
                 warmup_updates: int = 0, probe: Probe | None = None, probe_every: int = 0,
                 after_step: AfterStep | None = None) -> None:
        self.model, self.params = model, params
        self.bf16, self.channels_last = fast_path(params, device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.forward = torch.compile(model) if params.compile else model
        self.optimizer = SGD(list(model.named_parameters()), params.lr, params.momentum, params.weight_decay, momentum)
        self.soft_targets, self.warmup_updates = soft_targets, warmup_updates
        self.probe, self.probe_every = probe, probe_every
        self.after_step = after_step
        self.base_lr, self.updates = params.lr, 0

    def epoch(self, train: Data, generator: torch.Generator) -> tuple[int, int]:
        """One pass over `train` in a seeded order; returns (updates, images)."""
        p, device = self.params, train.y.device
        self.model.train()
        # Every random draw of the epoch at once, then one copy to the device: no host work per batch.
        order = torch.randperm(len(train), generator=generator).to(device)
        if p.augment == "crop_flip":
            offsets, flips = (t.to(device) for t in draw_crop_flip(len(train), p.crop_padding, generator))
        updates = images = 0
        for position in torch.arange(len(train), device=device).split(p.batch_size):
            if len(position) < 2:  # BatchNorm cannot train on a single image
                continue
            index = order[position]
            x, y = train.x[index], train.y[index]
            if p.augment == "crop_flip":
                x = crop_flip(x, p.crop_padding, offsets[position], flips[position])
            elif self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16):
                logits = self.forward(as_float(x))
                loss = self.soft_targets.loss(logits, y) if self.soft_targets else F.cross_entropy(logits, y)
            if self.updates < self.warmup_updates:  # linear warm-up from lr / warmup_updates
                self.optimizer.lr = self.base_lr * (self.updates + 1) / self.warmup_updates
            else:
                self.optimizer.lr = self.base_lr
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            if self.after_step:
                self.after_step(self.optimizer)
            self.updates += 1
            updates += 1
            images += len(index)
            if self.probe and self.probe_every and self.updates % self.probe_every == 0:
                self.probe(self.updates)
        return updates, images


def updates_per_epoch(n: int, batch_size: int) -> int:
    return n // batch_size + (n % batch_size >= 2)  # a last batch of one image is skipped


def fit(
    model: nn.Module,
    train: Data,
    val: Data,
    params: TrainParams,
    generator: torch.Generator,
    momentum: dict[str, torch.Tensor] | None = None,
    *,
    mitigate: Mitigations | None = None,
    probe: Probe | None = None,
    probe_every: int = 0,
    after_step: AfterStep | None = None,
) -> FitResult:
    """Train `model` in place for one chunk; it ends holding the selected checkpoint.
    `probe` (if any) runs before the first update and every `probe_every` updates; `after_step`
    (if any) after every optimizer step."""
    start = time.perf_counter()
    device = train.y.device
    mitigate = mitigate or Mitigations()
    trainer = Trainer(
        model, params, device, None if mitigate.fresh_optimizer else momentum,
        soft_targets=SoftTargets(model.head.out_features, device) if mitigate.soft_targets else None,
        warmup_updates=round(mitigate.warmup * params.epochs * updates_per_epoch(len(train), params.batch_size)),
        probe=probe, probe_every=probe_every, after_step=after_step,
    )
    if probe:
        probe(0)
    updates = images = 0
    history: list[float] = []
    best_epoch, best_state = 0, None
    for epoch in range(params.epochs):
        trainer.base_lr = lr_at(params, epoch)
        steps, seen = trainer.epoch(train, generator)
        updates, images = updates + steps, images + seen
        if params.select == "best_val":
            history.append(accuracy(model, val))
            if history[-1] > max(history[:-1], default=-1.0):  # the earliest best epoch wins ties
                best_epoch, best_state = epoch + 1, copy.deepcopy(model.state_dict())
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        best_epoch = params.epochs
    model.to(memory_format=torch.contiguous_format)

    return FitResult(
        updates=updates,
        images=images,
        val_history=history,
        best_epoch=best_epoch,
        train_acc=accuracy(model, train),
        val_acc=accuracy(model, val),
        seconds=time.perf_counter() - start,
        momentum=trainer.optimizer.momentum_state(),
    )


def fast_path(params: TrainParams, device: torch.device) -> tuple[bool, bool]:
    """(bf16 autocast, channels_last): on by default on CUDA, where they pay; fp32 on the CPU."""
    bf16 = params.precision == "bf16" or (params.precision == "auto" and device.type == "cuda")
    return bf16, device.type == "cuda"


# --- checkpoints ------------------------------------------------------------------------------


@dataclass
class Carried:
    """What a checkpoint carries into the next chunk besides the weights."""

    momentum: dict[str, torch.Tensor]  # SGD momentum by parameter name
    method_state: dict  # a method's own state (continual backprop's unit utilities and ages)


def save_checkpoint(path: str | Path, weights: dict[str, torch.Tensor], momentum: dict[str, torch.Tensor] | None = None,
                    method_state: dict | None = None) -> None:
    """Weights and buffers (a cpu_state) with the SGD momentum and the method's state to carry
    into the next chunk."""
    # Serialised in memory: torch.save names the archive's records after the file it writes,
    # and the temporary file's random name would make equal checkpoints differ byte-wise.
    buffer = io.BytesIO()
    torch.save({"model": weights, "momentum": momentum or {}, **({"method_state": method_state} if method_state else {})},
               buffer)
    write_bytes(path, buffer.getvalue())


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the model's weights and buffers."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def load_checkpoint(path: str | Path, model: nn.Module) -> Carried:
    """Load weights into `model`; return what the checkpoint carries into the next chunk."""
    path = Path(path)
    if not path.is_file():
        raise LureError(f"{path} is missing: run the stage that writes it (dvc repro)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    return Carried(state["momentum"], state.get("method_state", {}))
