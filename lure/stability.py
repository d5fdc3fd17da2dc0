"""The stability gap: accuracy on earlier chunks while training on a new one.

A relearn stage evaluates on fixed held-out (validation) images of every earlier chunk and of the
new chunk: before the method forgets (step 0), right after it (step 0 again: a reset is part of
the gap), and every k updates (lure.relearn.Probe, a hook of the training loop), which dvclive
logs as they are measured (lure.progress.Log). From the curves:

- acc_before: old-data accuracy before the method forgets (the model of the previous chunk);
- min_old: the lowest old-data accuracy after that, the forgetting step included (a reset
  is part of the gap); gap_depth = acc_before - min_old;
- recovery_updates: updates until old-data accuracy is back at acc_before (at or after its
  minimum); absent, with recovered = 0, if it never is;
- min_acc (De Lange et al. 2023, with chunks as tasks): mean over earlier chunks of the lowest
  accuracy on that chunk during this one; wc_acc = acc_new / k + (1 - 1/k) * min_acc, acc_new the
  new chunk's accuracy at the end;
- sgm_gap (Harun & Kanan 2023): 1 - mean over evaluations after the start of old acc / acc_before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lure.io import unreadable


@dataclass
class Curves:
    """Accuracy at each evaluation point: per earlier chunk, on all of them pooled, on the new one."""

    steps: list[int] = field(default_factory=list)
    per_chunk: dict[int, list[float]] = field(default_factory=dict)
    old: list[float] = field(default_factory=list)
    new: list[float] = field(default_factory=list)

    def add(self, step: int, per_chunk: dict[int, float], old: float, new: float) -> None:
        self.steps.append(step)
        for chunk, acc in per_chunk.items():
            self.per_chunk.setdefault(chunk, []).append(acc)
        self.old.append(old)
        self.new.append(new)


def gap_metrics(curves: Curves, k: int) -> dict[str, float | int]:
    """The metrics above, for chunk k, from curves whose first point precedes the forgetting."""
    before = curves.old[0]
    after = curves.old[1:] or curves.old[:1]  # no evaluation after the start: nothing dropped
    lowest = min(after)
    at = 1 + after.index(lowest) if len(curves.old) > 1 else 0
    result: dict[str, float | int] = {"acc_before": before, "min_old": lowest, "gap_depth": before - lowest}
    if lowest >= before:
        result.update(recovered=1, recovery_updates=0)
    else:
        back = next((curves.steps[i] for i in range(at, len(curves.old)) if curves.old[i] >= before), None)
        result.update(recovered=int(back is not None), **({"recovery_updates": back} if back is not None else {}))
    chunk_minima = [min(accs[1:] or accs) for accs in curves.per_chunk.values()]
    min_acc = sum(chunk_minima) / len(chunk_minima)
    result.update(
        min_acc=min_acc,
        wc_acc=curves.new[-1] / k + (1 - 1 / k) * min_acc,
        sgm_gap=1 - sum(a / before for a in after) / len(after) if before > 0 else 0.0,
    )
    return result


def stability_summary(per_chunk: list[dict]) -> dict[str, float | int]:
    """Over a method's chunks 2..N: mean gap depth, min-ACC and SGM gap, the last WC-ACC, and how
    many chunks never got their old-data accuracy back."""
    if not per_chunk:
        return {}

    def mean(key: str) -> float:
        return sum(c[key] for c in per_chunk) / len(per_chunk)

    return {
        "gap_depth": mean("gap_depth"),
        "min_acc": mean("min_acc"),
        "wc_acc": per_chunk[-1]["wc_acc"],
        "sgm_gap": mean("sgm_gap"),
        "never_recovered": sum(1 - c["recovered"] for c in per_chunk),
    }


# --- the curves on disk: dvclive's log -----------------------------------------------------------


def read_curve(directory: Path, data: str) -> list[tuple[int, float]] | None:
    """(step, accuracy) of the `old` or `new` curve of a log, or None where there is no log."""
    log = directory / "plots" / "metrics" / f"{data}_acc.tsv"
    if not log.is_file():
        return None
    try:
        rows = [line.split("\t") for line in log.read_text().splitlines()[1:]]
        return [(int(step), float(acc)) for step, acc in rows]
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise unreadable(log, err) from None
