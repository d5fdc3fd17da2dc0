"""Stage report: compare the methods side by side (metrics/summary.json and the plots)."""

from lure.config import load_params
from lure.errors import run_command
from lure.report import tables, write_report


def main(params: str = "params.yaml") -> None:
    print(tables(write_report(list(load_params(params).methods))))


if __name__ == "__main__":
    run_command(main)
