"""Stage report: the methods side by side, mean and std over the run seeds (metrics/summary.json
and the plot data; lure.report)."""

from lure import paths
from lure.config import load_params
from lure.errors import run_command
from lure.io import write_json, write_text
from lure.report import report


def main(params: str = "params.yaml") -> None:
    p = load_params(params)
    result = report(list(p.methods), p.seeds)
    for path, text in result.plots.items():
        write_text(path, text)
    write_json(paths.SUMMARY, result.summary)
    print(result.tables)


if __name__ == "__main__":
    run_command(main)
