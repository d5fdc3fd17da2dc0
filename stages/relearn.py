"""Stage relearn: when chunk k arrives, one method forgets (lure.forgetting), then the model
relearns on chunk k under the replay mode."""

import time
import zlib

import torch

from lure import paths
from lure.config import load_params
from lure.data import load_meta
from lure.errors import LureError, run_command
from lure.forgetting import ForgetContext, forget
from lure.io import write_json
from lure.models import model_for
from lure.train import (
    FORGET_STREAM, FRESH_MODEL_STREAM, SHUFFLE_STREAM, cpu_state, derive_seed, fit, load_checkpoint,
    load_chunk_data, pick_device, provenance, save_checkpoint, seeded,
)


def main(method: str, chunk: int, params: str = "params.yaml") -> None:
    p = load_params(params)
    if method not in p.methods:
        raise LureError(f"methods.{method}: no such method in {params} (have {', '.join(p.methods)})")
    if not 2 <= chunk <= p.n_chunks:
        raise LureError(f"chunk {chunk}: {params} lists chunks 2..{p.n_chunks}")
    device = pick_device(p.train.device)
    meta = load_meta(paths.PREPARED)
    train, val, new = load_chunk_data(paths.PREPARED, p, chunk, device)

    def new_model() -> torch.nn.Module:
        return model_for(p.model, meta).to(device)

    model = new_model()
    momentum = load_checkpoint(paths.model_path(method, chunk - 1), model)
    init = new_model()
    load_checkpoint(paths.INIT_MODEL, init)
    method_key = zlib.crc32(method.encode())  # a stable number per method name

    def fresh_model() -> torch.nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(p.seed, chunk, FRESH_MODEL_STREAM, method_key))
            return new_model()

    ctx = ForgetContext(
        init_state=init.state_dict(),
        fresh_model=fresh_model,
        replay=train,
        chunk=new,
        generator=seeded(p.seed, chunk, FORGET_STREAM, method_key),
    )
    start = time.perf_counter()
    reset = forget(model, p.methods[method], ctx)
    forget_s = time.perf_counter() - start
    carried = momentum if p.train.optimizer_state == "carry" else None
    result = fit(model, train, val, p.train, seeded(p.seed, chunk, SHUFFLE_STREAM), carried)

    n_params = {name: t.numel() for name, t in model.named_parameters()}
    reset_total = sum(reset.get(name, 0.0) * n for name, n in n_params.items()) / sum(n_params.values())
    save_checkpoint(paths.model_path(method, chunk), cpu_state(model), result.momentum)
    write_json(paths.relearn_metrics_path(method, chunk), {
        **result.metrics(),
        "forget_s": round(forget_s, 3),
        "reset_fraction": reset_total,
        "reset": reset,
        "provenance": provenance(p.seed, device),
    })
    print(f"{method} chunk {chunk}: reset {reset_total:.3f} of the weights, "
          f"val acc {result.val_acc:.4f} after {result.updates} updates on {device}")


if __name__ == "__main__":
    run_command(main)
