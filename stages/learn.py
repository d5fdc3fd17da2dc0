"""Stage learn: for one run seed, draw the initial model and train it on chunk 1; every method
of that seed starts from here."""

import torch
import typer

from lure import paths
from lure.config import load_params
from lure.data import load_chunks, load_meta
from lure.errors import run_command
from lure.io import write_json
from lure.models import model_for, set_input_stats
from lure.runs import check_run_seed
from lure.train import SHUFFLE_STREAM, as_float, cpu_state, fit, pick_device, provenance, replay_data, save_checkpoint, seeded


def main(seed: int = typer.Option(..., help="run seed, one of `seeds` in params.yaml"),
         params: str = "params.yaml") -> None:
    p = load_params(params)
    check_run_seed(p, seed, params)
    device = pick_device(p.train.device)
    train, val, _ = replay_data(load_chunks(paths.PREPARED, 1), p, device)

    torch.manual_seed(seed)
    model = model_for(p.model, load_meta(paths.PREPARED)).to(device)
    set_input_stats(model, as_float(train.x))  # statistics of the only data seen so far
    init = cpu_state(model)
    result = fit(model, train, val, p.train, seeded(seed, 1, SHUFFLE_STREAM))

    save_checkpoint(paths.init_model_path(seed), init)
    save_checkpoint(paths.first_model_path(seed), cpu_state(model), result.momentum)
    write_json(paths.learn_metrics_path(seed),
               {"chunk_1": result.metrics(), "provenance": provenance(p.seed, seed, device)})
    print(f"seed {seed}, chunk 1: val acc {result.val_acc:.4f} after {result.updates} updates on {device}")


if __name__ == "__main__":
    run_command(main)
