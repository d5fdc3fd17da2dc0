"""Stage report: compare the methods side by side (metrics/summary.json and the plots)."""

from lure.config import load_params
from lure.errors import run_command
from lure.report import accuracy_table, markdown_table, write_report


def main(params: str = "params.yaml") -> None:
    evaluations = write_report(list(load_params(params).methods))
    print(markdown_table({m: e["final"] for m, e in evaluations.items()}))
    print()
    print(accuracy_table(evaluations))


if __name__ == "__main__":
    run_command(main)
