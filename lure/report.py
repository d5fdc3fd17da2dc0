"""The comparison across methods: one summary row per method, accuracy per chunk for plots."""

from __future__ import annotations

import json

from lure import paths
from lure.errors import LureError
from lure.io import write_json, write_text

COLUMNS = ("final_acc", "anytime_acc", "cer", "ece", "nll", "brier", "updates", "images", "wall_s")


def load_evaluations(methods: list[str]) -> dict[str, dict]:
    evaluations = {}
    for method in methods:
        path = paths.evaluate_metrics_path(method)
        if not path.is_file():
            raise LureError(f"{path} is missing: run the evaluate stage for {method} first")
        evaluations[method] = json.loads(path.read_text())
    return evaluations


def accuracy_rows(evaluations: dict[str, dict]) -> list[dict]:
    """Long format (one row per method and chunk): what the accuracy-vs-chunk plot draws."""
    return [
        {"method": method, "chunk": int(chunk.removeprefix("chunk_")), "test_acc": values["test_acc"],
         "updates": values["updates"]}
        for method, evaluation in evaluations.items()
        for chunk, values in evaluation["chunks"].items()
    ]


def markdown_table(summary: dict[str, dict]) -> str:
    header = "| method | " + " | ".join(COLUMNS) + " |"
    rule = "|---|" + "---:|" * len(COLUMNS)
    rows = [f"| {m} | " + " | ".join(_fmt(row[c]) for c in COLUMNS) + " |" for m, row in summary.items()]
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
    summary = {method: evaluation["final"] for method, evaluation in evaluations.items()}
    rows = accuracy_rows(evaluations)
    csv = "method,chunk,test_acc,updates\n" + "".join(
        f"{r['method']},{r['chunk']},{r['test_acc']},{r['updates']}\n" for r in rows
    )
    write_json(paths.SUMMARY, summary)
    write_text(paths.ACCURACY_PLOT, csv)
    return evaluations

