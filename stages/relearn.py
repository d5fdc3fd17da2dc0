"""Stage relearn: when chunk k arrives, one method forgets (lure.forgetting), then the model
relearns on chunk k under the replay mode, evaluated as it goes on held-out images of every
chunk so far (the stability gap, lure.stability). One run seed drives the forgetting draws and
the batch order; the data (replay reservoir, held-out images) follows `seed`, shared by all runs."""

import time
import zlib

import numpy as np
import torch
import typer

from lure import paths
from lure.config import load_params
from lure.data import Split, load_chunks, load_meta
from lure.errors import LureError, run_command
from lure.forgetting import ForgetContext, forget, reset_shares
from lure.io import atomic_dir, write_json
from lure.mitigations import class_mean_head
from lure.models import model_for
from lure.runs import check_method, check_run_seed
from lure.stability import Stream, gap_metrics
from lure.train import (
    FORGET_STREAM, FRESH_MODEL_STREAM, SHUFFLE_STREAM, SPLIT_STREAM, Data, accuracy, cpu_state, derive_seed, fit,
    load_checkpoint, pick_device, provenance, replay_data, save_checkpoint, seeded,
)

HELD_OUT_STREAM = 6


def held_out(val: Split, samples: int, seed: int, k: int, device: torch.device) -> Data:
    """A fixed seeded subset of a chunk's validation images, for the continual evaluation."""
    keep = np.random.default_rng([seed, HELD_OUT_STREAM, k]).permutation(len(val))[:samples]
    return Data.of(val.take(np.sort(keep)), device)


def main(method: str, chunk: int, seed: int = typer.Option(..., help="run seed, one of `seeds` in params.yaml"),
         params: str = "params.yaml") -> None:
    from dvclive import Live

    p = load_params(params)
    check_method(p, method, params)
    if not 2 <= chunk <= p.n_chunks:
        raise LureError(f"chunk {chunk}: {params} lists chunks 2..{p.n_chunks}")
    check_run_seed(p, seed, params)
    settings = p.methods[method]
    device = pick_device(p.train.device)
    meta = load_meta(paths.PREPARED)
    chunks = load_chunks(paths.PREPARED, chunk)
    train, val, new = replay_data(chunks, p, device)

    def new_model() -> torch.nn.Module:
        return model_for(p.model, meta).to(device)

    model = new_model()
    carried = load_checkpoint(paths.model_path(method, seed, chunk - 1), model)
    init = new_model()
    load_checkpoint(paths.init_model_path(seed), init)
    method_key = zlib.crc32(method.encode())  # a stable number per method name

    def fresh_model() -> torch.nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(seed, chunk, FRESH_MODEL_STREAM, method_key))
            return new_model()

    ctx = ForgetContext(
        init_state=init.state_dict(),
        fresh_model=fresh_model,
        replay=train,
        chunk=new,
        generator=seeded(seed, chunk, FORGET_STREAM, method_key),
        run_generator=seeded(seed, SPLIT_STREAM, method_key),
        momentum=carried.momentum,
        state=carried.method_state,
    )
    # Continual evaluation on held-out images of every chunk so far, the same in every run: before
    # the method forgets (step 0), after it (step 0 again), and every `stability.every` updates.
    checks = [held_out(c.val, p.stability.samples, p.seed, i, device) for i, c in enumerate(chunks, start=1)]
    stream = Stream()

    def probe(step: int) -> None:
        correct = {i: accuracy(model, d) * len(d) for i, d in enumerate(checks[:-1], start=1)}
        stream.add(step, {i: c / len(checks[i - 1]) for i, c in correct.items()},
                   old=sum(correct.values()) / sum(len(d) for d in checks[:-1]), new=accuracy(model, checks[-1]))

    every = p.stability.every
    if every:
        probe(0)
    start = time.perf_counter()
    try:
        reset = forget(model, settings, ctx)
    except LureError as err:  # a setting that does not fit the model, e.g. a layer name
        raise LureError(f"methods.{method}.{err}") from None
    if settings.mitigate.head_init == "class_means" and reset.get("head.weight") == 1.0:
        class_mean_head(model, train.x, train.y)
    forget_s = time.perf_counter() - start
    hook = ctx.during_training
    result = fit(model, train, val, p.train, seeded(seed, chunk, SHUFFLE_STREAM), ctx.momentum,
                 mitigate=settings.mitigate, probe=probe if every else None, probe_every=every,
                 after_step=hook.after_step if hook else None)
    method_state = hook.close() if hook else {}
    if hook:
        reset = {**reset, **hook.reset}

    reset_total, reset_by_layer = reset_shares(model, reset)
    save_checkpoint(paths.model_path(method, seed, chunk), cpu_state(model), result.momentum, method_state)
    with atomic_dir(paths.stream_dir(method, seed, chunk)) as tmp:
        live = Live(dir=str(tmp), dvcyaml=None, save_dvc_exp=False, report=None)
        for i, step in enumerate(stream.steps):
            live.step = step
            live.log_metric("old_acc", stream.old[i])
            live.log_metric("new_acc", stream.new[i])
        live.end()
    write_json(paths.relearn_metrics_path(method, seed, chunk), {
        **result.metrics(),
        "forget_s": round(forget_s, 3),
        "reset_fraction": reset_total,
        "reset_by_layer": reset_by_layer,
        "reset": reset,
        **({"stability": gap_metrics(stream, chunk)} if stream.steps else {}),
        "provenance": provenance(p.seed, seed, device),
    })
    gap = f", stability gap {stream.old[0] - min(stream.old[1:] or stream.old):.3f}" if stream.steps else ""
    print(f"{method} seed {seed} chunk {chunk}: reset {reset_total:.3f} of the weights, val acc {result.val_acc:.4f} "
          f"after {result.updates} updates on {device}{gap}")


if __name__ == "__main__":
    run_command(main)
