"""Chunk 1, learned once per run seed for every method: the run's initial model, and the model
that every method's chain starts from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lure import streams
from lure.checkpoints import Checkpoint, cpu_state
from lure.chunks import load_chunks, load_meta, noise_metrics
from lure.config import Params
from lure.device import pick_device, provenance
from lure.models import model_for, set_input_stats
from lure.placement import place
from lure.progress import Log, Progress
from lure.replay import replay
from lure.train import NotFinite, fit


@dataclass
class Learned:
    initial: Checkpoint  # the weights before chunk 1: what scratch returns to
    checkpoint: Checkpoint  # after chunk 1
    metrics: dict
    summary: str


def learn(p: Params, seed: int, log_dir: Path) -> Learned:
    """Draw run seed `seed`'s initial model and train it on chunk 1, logging the training curves
    into `log_dir` as it goes."""
    p.check_run_seed(seed)
    device = pick_device(p.train)
    chunks = load_chunks(1)
    first = replay(chunks, p.replay, p.seed)
    placed = place({"train": first.train, "val": first.val}, device, p.train.placement)
    train, val = placed["train"], placed["val"]

    with streams.initial_weights(seed):
        model = model_for(p.model, load_meta(), device)
    set_input_stats(model, train.x)  # statistics of the only data seen so far
    initial = Checkpoint(cpu_state(model))
    where = f"seed {seed}, chunk 1"
    with Log(log_dir) as log:
        try:
            result = fit(model, train, val, p.train, streams.batch_order(seed, 1), hooks=[Progress(where, log)])
        except NotFinite as err:
            raise err.of_run(where, p.train.lr) from None
        log.close({"train_s": result.seconds})
    metrics = {"chunk_1": {**result.metrics(), **noise_metrics(chunks[-1])}, "provenance": provenance(p, seed, device)}
    return Learned(initial, Checkpoint(cpu_state(model), result.state), metrics,
                   f"{where}: val acc {result.val_acc:.4f} after {result.updates} updates on {device}")

