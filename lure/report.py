"""The comparison across methods: one summary row per method, accuracy per chunk for plots."""

from __future__ import annotations

import json

from lure import paths
from lure.errors import LureError
from lure.io import write_json, write_text

# The summary table's columns, in order; those a run did not measure are left out.
COLUMNS = ("final_acc", "anytime_acc", "cer", "ece", "ece_ts", "nll", "brier", "mca", "rel_robustness",
           "ece_corrupt", "gap_depth", "min_acc", "wc_acc", "sgm_gap", "never_recovered", "updates", "wall_s")


def load_evaluations(methods: list[str]) -> dict[str, dict]:
    evaluations = {}
    for method in methods:
        path = paths.evaluate_metrics_path(method)
        if not path.is_file():
            raise LureError(f"{path} is missing: run the evaluate stage for {method} first")
        evaluations[method] = json.loads(path.read_text())
    return evaluations


def _csv(columns: tuple[str, ...], rows: list[dict]) -> str:
    return ",".join(columns) + "\n" + "".join(",".join(str(row[c]) for c in columns) + "\n" for row in rows)


def accuracy_rows(evaluations: dict[str, dict]) -> list[dict]:
    """One row per method and chunk: test accuracy against the chunk and the updates spent so far."""
    rows = []
    for method, evaluation in evaluations.items():
        spent = 0
        for chunk, values in evaluation["chunks"].items():
            spent += values["updates"]
            rows.append({"method": method, "chunk": int(chunk.removeprefix("chunk_")),
                         "test_acc": values["test_acc"], "cum_updates": spent})
    return rows


def stability_rows(evaluations: dict[str, dict]) -> list[dict]:
    """One row per method, chunk, evaluation step and data (old: earlier chunks, new: this one),
    from the dvclive logs of the relearn stages."""
    rows = []
    for method, evaluation in evaluations.items():
        for chunk in evaluation["chunks"]:
            k = int(chunk.removeprefix("chunk_"))
            for data in ("old", "new"):
                log = paths.stream_dir(method, k) / "plots" / "metrics" / f"{data}_acc.tsv"
                if k == 1 or not log.is_file():
                    continue
                for line in log.read_text().splitlines()[1:]:
                    step, accuracy = line.split("\t")
                    rows.append({"method": method, "chunk": k, "step": int(step), "data": data, "accuracy": accuracy})
    return rows


def corruption_rows(evaluations: dict[str, dict]) -> list[dict]:
    """One row per method and severity: mean accuracy over the standard corruptions."""
    return [{"method": method, "severity": int(severity.removeprefix("s")), "accuracy": accuracy}
            for method, evaluation in evaluations.items()
            for severity, accuracy in evaluation.get("robustness", {}).get("by_severity", {}).items()]


def markdown_table(summary: dict[str, dict]) -> str:
    columns = [c for c in COLUMNS if all(c in row for row in summary.values())]
    header = "| method | " + " | ".join(columns) + " |"
    rule = "|---|" + "---:|" * len(columns)
    rows = [f"| {m} | " + " | ".join(_fmt(row[c]) for c in columns) + " |" for m, row in summary.items()]
    return "\n".join([header, rule, *rows])


def accuracy_table(evaluations: dict[str, dict]) -> str:
    """Test accuracy after every chunk, one row per method."""
    chunks = list(next(iter(evaluations.values()))["chunks"])
    header = "| method | " + " | ".join(c.replace("_", " ") for c in chunks) + " |"
    rule = "|---|" + "---:|" * len(chunks)
    rows = [f"| {m} | " + " | ".join(f"{e['chunks'][c]['test_acc']:.4f}" for c in chunks) + " |"
            for m, e in evaluations.items()]
    return "\n".join([header, rule, *rows])


def tables(evaluations: dict[str, dict]) -> str:
    """The per-method summary, then accuracy after every chunk: what the report prints."""
    return markdown_table({m: e["final"] for m, e in evaluations.items()}) + "\n\n" + accuracy_table(evaluations)


def _fmt(value: float | int) -> str:
    return str(value) if isinstance(value, int) else f"{value:.4f}"


def write_report(methods: list[str]) -> dict[str, dict]:
    """Write the summary and the plot data; return the evaluations, by method."""
    evaluations = load_evaluations(methods)
    write_json(paths.SUMMARY, {method: evaluation["final"] for method, evaluation in evaluations.items()})
    write_text(paths.ACCURACY_PLOT, _csv(("method", "chunk", "test_acc", "cum_updates"), accuracy_rows(evaluations)))
    write_text(paths.CORRUPTION_PLOT, _csv(("method", "severity", "accuracy"), corruption_rows(evaluations)))
    write_text(paths.STABILITY_PLOT, _csv(("method", "chunk", "step", "data", "accuracy"), stability_rows(evaluations)))
    return evaluations

