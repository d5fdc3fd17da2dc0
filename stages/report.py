"""Stage report: the methods side by side, mean and std over the run seeds (metrics/summary.json
and the plot data; lure.report)."""

from lure import paths
from lure.config import PARAMS_FILE, load_params
from lure.errors import ParamsFile, run_command
from lure.io import write_json, write_text
from lure.report import report


def main(params_file: ParamsFile = PARAMS_FILE) -> None:
    p = load_params(params_file)
    result = report(list(p.methods), p.seeds)
    for path, text in result.plots.items():
        write_text(path, text)
    write_json(paths.SUMMARY, result.summary)
    write_json(paths.TIMING, result.timing)
    print(result.tables + "\n\n(every column: uv run lure results --all)")


if __name__ == "__main__":
    run_command(main)
