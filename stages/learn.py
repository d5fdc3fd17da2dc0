"""Stage learn: draw the initial model and train it on chunk 1; every method starts from here."""

import torch

from lure import paths
from lure.config import load_params
from lure.data import load_chunks, load_meta
from lure.errors import run_command
from lure.io import write_json
from lure.models import model_for, set_input_stats
from lure.train import SHUFFLE_STREAM, as_float, cpu_state, fit, pick_device, provenance, replay_data, save_checkpoint, seeded


def main(params: str = "params.yaml") -> None:
    p = load_params(params)
    device = pick_device(p.train.device)
    train, val, _ = replay_data(load_chunks(paths.PREPARED, 1), p, device)

    torch.manual_seed(p.seed)
    model = model_for(p.model, load_meta(paths.PREPARED)).to(device)
    set_input_stats(model, as_float(train.x))  # statistics of the only data seen so far
    init = cpu_state(model)
    result = fit(model, train, val, p.train, seeded(p.seed, 1, SHUFFLE_STREAM))

    save_checkpoint(paths.INIT_MODEL, init)
    save_checkpoint(paths.FIRST_MODEL, cpu_state(model), result.momentum)
    write_json(paths.LEARN_METRICS, {"chunk_1": result.metrics(), "provenance": provenance(p.seed, device)})
    print(f"chunk 1: val acc {result.val_acc:.4f} after {result.updates} updates on {device}")


if __name__ == "__main__":
    run_command(main)
