"""Stage relearn: when chunk k arrives, one method forgets, then the model relearns on chunk k
under the replay mode, evaluated as it goes on held-out images of every chunk so far (lure.relearn)."""

from typing import Annotated

import typer

from lure import distributed, paths
from lure.checkpoints import save_checkpoint
from lure.config import PARAMS_FILE, load_params
from lure.errors import ParamsFile, RunSeed, run_command
from lure.io import write_json
from lure.relearn import relearn


def main(method: str, k: Annotated[int, typer.Argument(help="the chunk that arrives, 2 or more")],
         seed: RunSeed, params_file: ParamsFile = PARAMS_FILE) -> None:
    p = load_params(params_file)
    if distributed.start(p.train):  # train.processes x train.nodes > 1: its ranks ran under torchrun
        return
    relearned = relearn(p, method, seed, k, log_dir=paths.curves_log(method, seed, k))
    if not distributed.is_writer():
        return
    save_checkpoint(paths.model(method, seed, k), relearned.checkpoint)
    write_json(paths.relearn_metrics(method, seed, k), relearned.metrics)
    print(relearned.summary)


if __name__ == "__main__":
    run_command(main)
