"""Stage evaluate: one run (method, seed): its model after every chunk on the test set; for the
last model, calibration and robustness to corruptions; the compute spent (lure.evaluate)."""

from lure import paths
from lure.config import PARAMS_FILE, load_params
from lure.errors import ParamsFile, RunSeed, run_command
from lure.evaluate import evaluate
from lure.io import write_json, write_text


def main(method: str, seed: RunSeed, params_file: ParamsFile = PARAMS_FILE) -> None:
    evaluation = evaluate(load_params(params_file), method, seed)
    write_text(paths.reliability_bins(method, seed), evaluation.reliability_csv)
    write_json(paths.evaluation(method, seed), evaluation.result)
    print(evaluation.summary)


if __name__ == "__main__":
    run_command(main)
