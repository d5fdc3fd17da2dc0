"""Stage report: compare the methods side by side, mean and std over the run seeds
(metrics/summary.json and the plots)."""

from lure.config import load_params
from lure.errors import run_command
from lure.report import tables, write_report


def main(params: str = "params.yaml") -> None:
    p = load_params(params)
    print(tables(write_report(list(p.methods), p.seeds)))


if __name__ == "__main__":
    run_command(main)
