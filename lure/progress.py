"""How a training stage shows its progress as it runs.

Per epoch: a progress bar when the output is a terminal; when it is not (DVC streams a stage's
output, CI logs), a plain line every `PLAIN_EVERY_S` seconds and none for a stage shorter than
that, so the default run's output stays short. dvclive logs the training curves (loss, accuracy
on the training batches, validation accuracy, against the updates so far) and the continual
evaluation's (old_acc, new_acc) into the stage's log folder as it goes, where `dvc plots` and
editors can watch them while the stage runs.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from pathlib import Path

from lure import distributed, paths
from lure.io import write_json
from lure.train import Epoch, Hook, Trainer

PLAIN_EVERY_S = 10.0


class Log:
    """dvclive's log in `directory`, written as values arrive; `close` adds the stage's timing.
    Used as a context: a stage that fails leaves no half-written log behind."""

    def __init__(self, directory: Path) -> None:
        from dvclive import Live  # ~1.5 s to import: only the training stages log

        self.directory = Path(directory)
        self.made = [p for p in [self.directory, *self.directory.parents] if not p.exists()]  # to undo on failure
        # under DDP only the writer logs (every rank sees the same figures)
        self.live = Live(dir=str(self.directory), dvcyaml=None, save_dvc_exp=False, report=None) \
            if distributed.is_writer() else None

    def __enter__(self) -> Log:
        return self

    def __exit__(self, kind, error, trace) -> None:
        if error is None or self.live is None:
            return
        shutil.rmtree(self.directory, ignore_errors=True)
        for folder in self.made[1:]:  # the folders above it that it made, if nothing else went there
            try:
                folder.rmdir()
            except OSError:
                break

    def log(self, step: int, **values: float | None) -> None:
        if self.live is None:
            return
        self.live.step = step
        for name, value in values.items():
            if value is not None and math.isfinite(value):  # an empty epoch has no loss
                self.live.log_metric(name, value)

    def close(self, timing: dict[str, float]) -> None:
        """Seconds the stage spent, apart from the metrics: timings differ from run to run."""
        if self.live is None:
            return
        self.live.end()
        write_json(self.directory / paths.STAGE_TIMING, {name: round(s, 3) for name, s in timing.items()})


class Progress(Hook):
    """Shows and logs each epoch of a chunk's training."""

    def __init__(self, label: str, log: Log | None = None, terminal: bool | None = None) -> None:
        self.label, self.log = label, log
        self.terminal = sys.stderr.isatty() if terminal is None else terminal  # tqdm draws on stderr
        self.quiet = not distributed.is_writer()  # under DDP, one line per machine
        self.bar = None
        self.start = self.last_line = 0.0

    def before_fit(self, trainer: Trainer) -> None:
        self.start = self.last_line = time.perf_counter()
        if self.terminal and not self.quiet:
            from tqdm import tqdm

            self.bar = tqdm(total=trainer.settings.epochs, desc=self.label, unit="epoch")

    def after_epoch(self, trainer: Trainer, epoch: int, stats: Epoch) -> None:
        if self.log:
            self.log.log(trainer.updates, loss=stats.loss, train_acc=stats.train_acc, val_acc=stats.val_acc)
        figures = {"loss": f"{stats.loss:.3f}", "train": f"{stats.train_acc:.3f}",
                   **({"val": f"{stats.val_acc:.3f}"} if stats.val_acc is not None else {}),
                   "img/s": f"{stats.images_per_s:.0f}"}
        if self.bar is not None:
            self.bar.set_postfix(figures, refresh=False)
            self.bar.update()
            return
        now, epochs = time.perf_counter(), trainer.settings.epochs
        if now - self.last_line >= PLAIN_EVERY_S and epoch < epochs and not self.quiet:
            left = (now - self.start) / epoch * (epochs - epoch)
            print(f"  {self.label}: epoch {epoch}/{epochs}, " + ", ".join(f"{k} {v}" for k, v in figures.items())
                  + f", {left:.0f} s left", flush=True)
            self.last_line = now

    def after_fit(self, trainer: Trainer) -> None:
        if self.bar is not None:
            self.bar.close()
