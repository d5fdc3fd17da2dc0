"""Stage evaluate: one run (method, seed): its model after every chunk on the test set; for the
last model, calibration and robustness to corruptions; the compute spent (lure.evaluate)."""

import typer

from lure import paths
from lure.config import PARAMS_FILE, load_params
from lure.errors import ParamsFile, run_command
from lure.evaluate import evaluate
from lure.io import write_json, write_text


def main(method: str, seed: int = typer.Option(..., help="run seed, one of `seeds` in params.yaml"),
         params_file: ParamsFile = PARAMS_FILE) -> None:
    evaluation = evaluate(load_params(params_file), method, seed)
    write_text(paths.reliability(method, seed), evaluation.reliability_csv)
    write_json(paths.evaluation(method, seed), evaluation.result)
    print(evaluation.summary)


if __name__ == "__main__":
    run_command(main)
