"""Stage learn: for one run seed, draw the initial model and train it on chunk 1; every method
of that seed starts from here."""

from lure import distributed, paths
from lure.checkpoints import save_checkpoint
from lure.config import PARAMS_FILE, load_params
from lure.errors import ParamsFile, RunSeed, run_command
from lure.io import write_json
from lure.learn import learn


def main(seed: RunSeed, params_file: ParamsFile = PARAMS_FILE) -> None:
    p = load_params(params_file)
    if distributed.start(p.train):  # train.processes x train.nodes > 1: its ranks ran under torchrun
        return
    learned = learn(p, seed, log_dir=paths.learn_log(seed))
    if not distributed.is_writer():
        return
    save_checkpoint(paths.init_model(seed), learned.initial)
    save_checkpoint(paths.first_model(seed), learned.checkpoint)
    write_json(paths.learn_metrics(seed), learned.metrics)
    print(learned.summary)


if __name__ == "__main__":
    run_command(main)
