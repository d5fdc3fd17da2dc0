"""Stage evaluate: one run (method, seed): its model after every chunk on the test set; for the
last model, calibration and robustness to corruptions; the compute spent (lure.evaluate)."""

from lure import paths
from lure.config import PARAMS_FILE, load_params
from lure.errors import ParamsFile, RunSeed, run_command
from lure.evaluate import evaluate
from lure.io import remove, write_json, write_text


def main(method: str, seed: RunSeed, params_file: ParamsFile = PARAMS_FILE) -> None:
    p = load_params(params_file)
    p.check_method(method)
    p.check_run_seed(seed)
    evaluation = evaluate(p, method, seed)  # reads the chunks params.yaml lists, nothing beyond
    write_text(paths.reliability_bins(method, seed), evaluation.reliability_csv)
    write_json(paths.evaluation(method, seed), evaluation.result)
    print(evaluation.summary)
    # DVC leaves the outputs of stages taken off params.yaml; they are in this stage's folder deps,
    # which DVC hashes once the command is done: removed last, when nothing reads them any more
    for stale in paths.chunks_beyond(method, seed, p.n_chunks):
        remove(stale)
        print(f"removed {stale}: chunk no longer in {params_file}")


if __name__ == "__main__":
    run_command(main)
