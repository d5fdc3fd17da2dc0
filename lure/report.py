"""The comparison across methods: every method ran once per run seed; the report gives, per
method, the mean over the seeds and, with two seeds or more, their sample standard deviation, so
that a difference between methods can be told from the spread between seeds.

Evaluations come as {method: {seed: evaluation}} (metrics/evaluate/seed_<s>/<method>.json).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from lure import paths
from lure.config import load_params
from lure.errors import LureError
from lure.io import read_json, unreadable
from lure.pipelines import METHOD_TEMPLATE, method_pipeline
from lure.stability import read_curve

# The summary table's columns, in order; those a run did not measure are left out. The compact
# table fits a terminal of 120 columns with mean ± std cells; `lure results --all` prints them all.
COLUMNS = ("final_acc", "tortoise_acc", "anytime_acc", "cer", "ece", "ece_ts", "nll", "brier", "mca",
           "rel_robustness", "ece_corrupt", "gap_depth", "min_acc", "wc_acc", "sgm_gap", "never_recovered",
           "reset_fraction", "updates", "images", "wall_s")
COMPACT = ("final_acc", "anytime_acc", "cer", "ece", "mca", "gap_depth")
COMPACT_TIMED = COMPACT + ("wall_s",)  # what the report and `lure results` print: with the wall times

Evaluations = dict[str, dict[int, dict]]  # method -> run seed -> evaluation


def load_evaluations(methods: list[str], seeds: list[int], folder: Path = paths.EVALUATIONS) -> Evaluations:
    """The evaluate stages' results, from metrics/evaluate or a folder of kept results."""
    evaluations: Evaluations = {}
    for method in methods:
        evaluations[method] = {}
        for seed in seeds:
            path = paths.evaluation(method, seed, folder)
            if not path.is_file():
                raise LureError(missing_evaluation(path, method, seed, folder))
            evaluations[method][seed] = read_json(path)
    return evaluations


def missing_evaluation(path: Path, method: str, seed: int, folder: Path = paths.EVALUATIONS) -> str:
    """Why a run's evaluation is not there: a method added to params.yaml with no pipeline file
    (`dvc exp run -S +methods.<m>...`) runs no stage of its own, and DVC does not say so."""
    if folder == paths.EVALUATIONS and METHOD_TEMPLATE.is_file() and not method_pipeline(method).is_file():
        return (f"{path} is missing: methods.{method} has no pipeline file ({method_pipeline(method)}), so "
                f"none of its stages ran; run `uv run lure pipelines` (and `git add pipelines` before queuing "
                f"experiments), then dvc repro or dvc exp run again")
    return f"{path} is missing: run the evaluate stage for {method}, seed {seed} first"


def load_kept(folder: Path) -> Evaluations:
    """The evaluations kept in `folder` (results/<name>, by `lure results --keep`): every method
    and run seed of the params file kept with them."""
    p = load_params(folder / "params.yaml")
    return load_evaluations(list(p.methods), p.seeds, folder / "evaluate")


# --- mean and std over the seeds ----------------------------------------------------------------


def mean(values: list[float | int]) -> float | int:
    """The mean; a whole-number mean of counts stays a count (1500 updates, not 1500.0), so that
    one seed's row reads exactly as that run's."""
    m = statistics.fmean(values)
    return int(m) if all(isinstance(v, int) for v in values) and m.is_integer() else m


def std(values: list[float | int]) -> float | None:
    """The sample standard deviation (ddof 1); None for a single seed, where 0 would be a lie."""
    return statistics.stdev(values) if len(values) >= 2 else None


def with_mean_and_std(row: dict, name: str, values: list[float | int]) -> None:
    """Set row[name] to the mean of `values` and, with two seeds or more, row[name_std] to their std."""
    row[name] = mean(values)
    spread = std(values)
    if spread is not None:
        row[f"{name}_std"] = spread


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def summary_row(finals: list[dict]) -> dict:
    """One method's summary over its seeds' `final` sections: each number's mean (and std),
    in the order of the first, then how many seeds."""
    names = [k for k, v in finals[0].items() if _is_number(v) and all(_is_number(f.get(k)) for f in finals)]
    row: dict = {}
    for name in names:
        with_mean_and_std(row, name, [f[name] for f in finals])
    row["seeds"] = len(finals)
    return row


def summary(evaluations: Evaluations) -> dict[str, dict]:
    return {method: summary_row([e["final"] for e in runs.values()]) for method, runs in evaluations.items()}


def averaged(rows: Iterable[dict], key: tuple[str, ...], values: tuple[str, ...],
             spread: tuple[str, ...] = ()) -> list[dict]:
    """Per-run rows averaged over the seeds: one row per distinct `key`, in first-seen order, with
    the mean of each of `values` and, with two seeds or more, `<name>_std` for each of `spread`."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in key), []).append(row)
    result = []
    for group_key, group in groups.items():
        row = dict(zip(key, group_key))
        for name in values:
            if name in spread:
                with_mean_and_std(row, name, [r[name] for r in group])
            else:
                row[name] = mean([r[name] for r in group])
        result.append(row)
    return result


# --- plot data -----------------------------------------------------------------------------------


def _csv(columns: tuple[str, ...], rows: list[dict]) -> str:
    return ",".join(columns) + "\n" + "".join(",".join(str(row[c]) for c in columns) + "\n" for row in rows)


def _runs(evaluations: Evaluations) -> Iterable[tuple[str, int, dict]]:
    for method, runs in evaluations.items():
        for seed, evaluation in runs.items():
            yield method, seed, evaluation


def accuracy_rows(evaluations: Evaluations) -> list[dict]:
    """One row per method and chunk: test accuracy (mean, and std with two seeds or more) against
    the chunk and the updates spent so far, averaged over the seeds."""
    rows = []
    for method, _, evaluation in _runs(evaluations):
        spent = 0
        for chunk, values in evaluation["chunks"].items():
            spent += values["updates"]
            rows.append({"method": method, "chunk": paths.chunk_number(chunk),
                         "test_acc": values["test_acc"], "cum_updates": spent})
    return averaged(rows, ("method", "chunk"), ("test_acc", "cum_updates"), spread=("test_acc",))


def stability_rows(evaluations: Evaluations) -> list[dict]:
    """One row per method, chunk, evaluation and data (old: earlier chunks, new: this one), from the
    dvclive logs of the relearn stages, averaged over the seeds.

    The i-th evaluation of every seed is averaged with the others' i-th, not by step: a log holds
    step 0 twice (before and after the method forgets)."""
    rows = []
    for method, seed, evaluation in _runs(evaluations):
        for chunk in evaluation["chunks"]:
            k = paths.chunk_number(chunk)
            for data in ("old", "new"):
                curve = read_curve(paths.curves_log(method, seed, k), data) if k > 1 else None
                for i, (step, accuracy) in enumerate(curve or []):
                    rows.append({"method": method, "chunk": k, "i": i, "step": step, "data": data,
                                 "accuracy": accuracy})
    return averaged(rows, ("method", "chunk", "data", "i", "step"), ("accuracy",))


def corruption_rows(evaluations: Evaluations) -> list[dict]:
    """One row per method and severity: mean accuracy over the standard corruptions, averaged over
    the seeds."""
    rows = [{"method": method, "severity": int(severity.removeprefix("s")), "accuracy": accuracy}
            for method, _, evaluation in _runs(evaluations)
            for severity, accuracy in evaluation.get("robustness", {}).get("by_severity", {}).items()]
    return averaged(rows, ("method", "severity"), ("accuracy",))


def read_reliability(method: str, seed: int) -> list[dict]:
    path = paths.reliability_bins(method, seed)
    if not path.is_file():
        raise LureError(missing_evaluation(path, method, seed))
    try:
        lines = path.read_text().splitlines()
        columns = lines[0].split(",")
        return [dict(zip(columns, map(float, line.split(",")), strict=True)) for line in lines[1:]]
    except (OSError, UnicodeDecodeError, IndexError, ValueError) as err:
        raise unreadable(path, err) from None


def pooled_reliability(bins_by_method: dict[str, list[list[dict]]]) -> list[dict]:
    """Per method, every seed's reliability bins pooled: per bin the images of all seeds, their
    mean confidence and accuracy (count-weighted means of the seeds' bins). Bins are keyed by their
    centre; an empty bin is absent from a seed's file and adds nothing."""
    rows = []
    for method, runs in bins_by_method.items():
        by_bin: dict[float, list[dict]] = {}
        for bins in runs:
            for b in bins:
                by_bin.setdefault(b["bin_centre"], []).append(b)
        for centre in sorted(by_bin):
            count = sum(b["count"] for b in by_bin[centre])
            rows.append({"method": method,
                         "confidence": sum(b["confidence"] * b["count"] for b in by_bin[centre]) / count,
                         "accuracy": sum(b["accuracy"] * b["count"] for b in by_bin[centre]) / count,
                         "count": int(count)})
    return rows


def reliability_csv(rows: list[dict]) -> str:
    return "method,confidence,accuracy,count\n" + "".join(
        f"{r['method']},{r['confidence']:.6f},{r['accuracy']:.6f},{r['count']}\n" for r in rows)


# --- tables ---------------------------------------------------------------------------------------


def _fmt(value: float | int | None, digits: int = 4) -> str:
    """Counts as they are; shares with `digits` decimals; seconds and means of counts with one."""
    if value is None:
        return "-"
    return str(value) if isinstance(value, int) else f"{value:.1f}" if abs(value) >= 10 else f"{value:.{digits}f}"


def signed(value: float, digits: int = 4) -> str:
    """A difference, with its sign, as _fmt writes a float (+0.0132, -3069.4)."""
    return ("+" if value >= 0 else "") + _fmt(float(value), digits)


SECONDS = ("wall_s",)  # printed with one decimal, as counts are


def _places(values: Iterable[float | int | None], digits: int = 4, counts: bool = False) -> int:
    """A column's decimals, for every mean and std in it alike: one for counts (whole numbers in
    every run), seconds and a column whose means or spreads reach 10 (a diverged run's loss),
    `digits` for the rest (shares)."""
    return 1 if counts or any(v is not None and abs(v) >= 10 for v in values) else digits


def count_columns(evaluations: Evaluations) -> set[str]:
    """The final metrics that are whole numbers in every run (cer, updates, never_recovered)."""
    finals = [e["final"] for runs in evaluations.values() for e in runs.values()]
    return {name for name in finals[0] if all(isinstance(f.get(name), int) and _is_number(f[name]) for f in finals)}


def _cell(row: dict, name: str, places: int = 4) -> str:
    """`mean ± std` with two seeds or more, both with the column's decimals (a count's mean too);
    the value alone with one (a count as it is)."""
    if name not in row:  # a metric only some methods have (the tortoise's accuracy)
        return "-"
    spread = row.get(f"{name}_std")
    if spread is None:
        return _fmt(row[name], places)
    return _fmt(float(row[name]), places) + (" ± 0" if spread == 0 else f" ± {_fmt(spread, places)}")  # 0: every run


def markdown_table(summary_rows: dict[str, dict], columns: tuple[str, ...] = COLUMNS, digits: int = 4,
                   counts: Iterable[str] = ()) -> str:
    # a column some methods lack (the tortoise's accuracy) shows "-" for them; one that none has, not at all
    columns = [c for c in columns if any(c in row for row in summary_rows.values())]
    places = {c: _places([v for row in summary_rows.values() if c in row for v in (row[c], row.get(f"{c}_std"))],
                         digits, c in counts or c in SECONDS) for c in columns}
    header = "| method | " + " | ".join(columns) + " |"
    rule = "|---|" + "---:|" * len(columns)
    rows = [f"| {m} | " + " | ".join(_cell(row, c, places[c]) for c in columns) + " |"
            for m, row in summary_rows.items()]
    return "\n".join([header, rule, *rows])


def accuracy_table(evaluations: Evaluations, digits: int = 4) -> str:
    """Test accuracy after every chunk, one row per method (mean ± std over the seeds)."""
    rows = accuracy_rows(evaluations)
    chunks = sorted({r["chunk"] for r in rows})
    header = "| method | " + " | ".join(f"chunk {k}" for k in chunks) + " |"
    rule = "|---|" + "---:|" * len(chunks)
    places = {k: _places([v for r in rows if r["chunk"] == k for v in (r["test_acc"], r.get("test_acc_std"))], digits)
              for k in chunks}
    cells = {(r["method"], r["chunk"]): _cell(r, "test_acc", places[r["chunk"]]) for r in rows}
    lines = [f"| {m} | " + " | ".join(cells[m, k] for k in chunks) + " |" for m in evaluations]
    return "\n".join([header, rule, *lines])


def recovery_table(evaluations: Evaluations) -> str:
    """Updates until old-data accuracy was back at its level before each chunk, one row per method
    (the mean over the seeds; `never`, or how many seeds never got it back)."""
    chunks = sorted({paths.chunk_number(c) for runs in evaluations.values() for e in runs.values()
                     for c, values in e["chunks"].items() if "stability" in values})
    if not chunks:
        raise LureError("no recovery to show: these runs had no continual evaluation (stability.every: 0)")
    header = "| method | " + " | ".join(f"after chunk {k}" for k in chunks) + " |"
    lines = [header, "|---|" + "---:|" * len(chunks)]
    for method, runs in evaluations.items():
        cells = []
        for k in chunks:
            gaps = [e["chunks"].get(f"chunk_{k}", {}).get("stability") for e in runs.values()]
            gaps = [g for g in gaps if g]
            back = [g["recovery_updates"] for g in gaps if g["recovered"]]
            never = len(gaps) - len(back)
            cells.append("-" if not gaps else "never" if not back else f"{round(statistics.fmean(back))}"
                         + (f" ({never} of {len(gaps)} never)" if never else ""))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def convergence_table(evaluations: Evaluations) -> str:
    """How far each chunk's training went, one row per method, so that a claim made "at
    convergence" can be checked rather than assumed: under train.stop_at_train_acc, the last
    epoch's accuracy on its training batches (what the rule tests; mean over the seeds, and the
    lowest seed's) and the epochs it took (mean, and the most); without the rule, the final
    model's accuracy on its training images."""
    chunks = sorted({paths.chunk_number(c) for runs in evaluations.values() for e in runs.values()
                     for c in e["chunks"]})
    lines = ["| method | " + " | ".join(f"chunk {k}" for k in chunks) + " |", "|---|" + "---:|" * len(chunks)]
    for method, runs in evaluations.items():
        cells = []
        for k in chunks:
            trained = [e["chunks"][f"chunk_{k}"] for e in runs.values() if f"chunk_{k}" in e["chunks"]]
            ruled = [t for t in trained if _is_number(t.get("epoch_train_acc")) and _is_number(t.get("epochs_run"))]
            acc = [t["epoch_train_acc"] for t in ruled] if ruled else \
                [t["train_acc"] for t in trained if _is_number(t.get("train_acc"))]
            cell = f"{statistics.fmean(acc):.3f} (min {min(acc):.3f})" if acc else "-"
            if ruled:
                epochs = [t["epochs_run"] for t in ruled]
                cell += f", {statistics.fmean(epochs):.0f} epochs (max {max(epochs)})"
            cells.append(cell)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- paired differences over the seeds ------------------------------------------------------------


def paired_differences(evaluations: Evaluations, baseline: str, metric: str,
                       method_metric: str | None = None) -> dict[str, dict]:
    """Per method, `metric` of its final model minus the baseline's on the same run seed (with
    `method_metric`, that metric of the method's: another network's accuracy against the baseline's
    model's, for the methods that carry it): the seeds compared (n), the mean difference, its std
    and the 95% interval of the mean from
    Student's t with n - 1 degrees of freedom (None below 2 seeds). Pairing by seed removes what
    the seeds share (the initial weights, chunk 1's model), so a smaller difference can be told
    apart than from two unpaired means; a claim holds only where the interval excludes 0."""
    if baseline not in evaluations:
        raise LureError(f"--paired: {baseline} is not a method of these runs ({', '.join(evaluations)})")
    base = evaluations[baseline]
    ours = method_metric or metric
    result = {}
    for method, runs in evaluations.items():
        if method == baseline:
            continue
        seeds = [s for s in runs if s in base and _is_number(runs[s]["final"].get(ours))
                 and _is_number(base[s]["final"].get(metric))]
        if not seeds:
            if method_metric:  # the methods without that network
                continue
            raise LureError(f"--paired: no run measured {metric} for both {method} and {baseline}")
        diffs = [runs[s]["final"][ours] - base[s]["final"][metric] for s in seeds]
        row = {"n": len(diffs), "mean": statistics.fmean(diffs), "std": std(diffs), "ci95": None, "seeds": seeds}
        if len(diffs) >= 2:
            from scipy.stats import t  # scikit-learn's dependency; here, not at the top: only this needs it

            half = t.ppf(0.975, len(diffs) - 1) * row["std"] / len(diffs) ** 0.5
            row["ci95"] = [row["mean"] - half, row["mean"] + half]
        result[method] = row
    return result


def paired_table(evaluations: Evaluations, baseline: str, metrics: tuple[str, ...], digits: int = 4) -> str:
    """paired_differences for each of `metrics` that the baseline measured, one row per method and
    metric, with whether the 95% interval lies above 0, below it, or includes it."""
    lines = [f"| method − {baseline} | metric | seeds | mean difference | 95% interval | |",
             "|---|---|---:|---:|---:|---|"]
    counts = count_columns(evaluations)
    for metric in metrics:
        if baseline in evaluations and not any(metric in run["final"] for run in evaluations[baseline].values()):
            continue  # another network's metric (the tortoise's): its pairings are the claims' (an unknown
            # baseline goes on to paired_differences, which names it)
        differences = paired_differences(evaluations, baseline, metric)
        places = _places([v for d in differences.values() for v in (d["mean"], *(d["ci95"] or ()))], digits,
                         metric in counts)
        for method, d in differences.items():
            interval = "-" if d["ci95"] is None else \
                f"[{signed(d['ci95'][0], places)}, {signed(d['ci95'][1], places)}]"
            verdict = "-" if d["ci95"] is None else "> 0" if d["ci95"][0] > 0 else "< 0" if d["ci95"][1] < 0 \
                else "includes 0"
            lines.append(f"| {method} | {metric} | {d['n']} | {signed(d['mean'], places)} | {interval} | {verdict} |")
    return "\n".join(lines)


def tables(evaluations: Evaluations, columns: tuple[str, ...] = COLUMNS, timing: dict[str, dict] | None = None,
           digits: int = 4) -> str:
    """The per-method summary in `columns` (with the wall times of `timing`, where given), then
    accuracy after every chunk: what the report and `lure results` print."""
    seeds = list(next(iter(evaluations.values())))
    heading = f"mean ± std over {len(seeds)} run seeds ({', '.join(map(str, seeds))})\n\n" if len(seeds) > 1 else ""
    rows = {m: {**row, **(timing or {}).get(m, {})} for m, row in summary(evaluations).items()}
    return heading + markdown_table(rows, columns, digits, count_columns(evaluations)) + "\n\n" + \
        accuracy_table(evaluations, digits)


def wall_times(evaluations: Evaluations) -> dict[str, dict]:
    """Per method: the forgetting and training seconds of a run over all its chunks (chunk 1's
    learning included), mean (and std) over the seeds, from the training stages' timing.json; a
    method is left out where a run's logs are gone, rather than averaged over fewer seeds."""
    rows = {}
    for method, runs in evaluations.items():
        seconds = []
        for seed, evaluation in runs.items():
            later = sorted(paths.chunk_number(c) for c in evaluation["chunks"])[1:]
            logs = [paths.learn_log(seed), *(paths.curves_log(method, seed, k) for k in later)]
            files = [log / paths.STAGE_TIMING for log in logs]
            if all(f.is_file() for f in files):
                seconds.append(round(sum(sum(read_json(f).values()) for f in files), 3))
        if len(seconds) == len(runs):
            rows[method] = {}
            with_mean_and_std(rows[method], "wall_s", seconds)
    return rows


# --- the stage ------------------------------------------------------------------------------------


@dataclass
class Report:
    summary: dict[str, dict]  # metrics/summary.json: one row per method
    timing: dict[str, dict]  # metrics/timing.json: wall seconds per method
    plots: dict[Path, str]  # the plot data, by path
    tables: str  # what the stage prints


def report(methods: list[str], seeds: list[int]) -> Report:
    """The summary, the plot data and the tables, all read and computed before the stage writes
    anything, so a missing input writes nothing."""
    evaluations = load_evaluations(methods, seeds)
    reliability = pooled_reliability({m: [read_reliability(m, s) for s in seeds] for m in methods})
    accuracy_columns = ("method", "chunk", "test_acc", "cum_updates") + (("test_acc_std",) if len(seeds) > 1 else ())
    plots = {
        paths.ACCURACY_PLOT: _csv(accuracy_columns, accuracy_rows(evaluations)),
        paths.CORRUPTION_PLOT: _csv(("method", "severity", "accuracy"), corruption_rows(evaluations)),
        paths.STABILITY_PLOT: _csv(("method", "chunk", "step", "data", "accuracy"), stability_rows(evaluations)),
        paths.RELIABILITY_PLOT: reliability_csv(reliability),
    }
    timing = wall_times(evaluations)
    return Report(summary(evaluations), timing, plots, tables(evaluations, COMPACT_TIMED, timing, digits=3))
