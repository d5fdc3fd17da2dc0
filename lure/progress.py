"""How a training stage shows its progress as it runs.

Per epoch: a progress bar when the output is a terminal; when it is not (DVC streams a stage's
output, CI logs), lure.ticker's plain line every few seconds, none for a stage shorter than
that. dvclive logs the training curves (loss, accuracy on the training batches, validation
accuracy, against the updates so far) and the continual evaluation's (old_acc, new_acc) into the
stage's log folder as it goes, where `dvc plots` and editors can watch them while the stage runs.
"""

from __future__ import annotations

import math
import shutil
import sys
import threading
from pathlib import Path

from lure import distributed, paths
from lure.io import write_json
from lure.ticker import Ticker
from lure.train import Epoch, Hook, Trainer


class Log:
    """dvclive's log in `directory`, written as values arrive; `close` adds the stage's timing.
    Used as a context: a stage that fails leaves no half-written log behind.

    dvclive's Live opens the DVC repository it runs in (~0.4 s of imports and reads per stage), so
    it is opened in a thread of its own while the stage goes on: values logged before it is ready
    wait for it, and go out in their order once it is."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.made = [p for p in [self.directory, *self.directory.parents] if not p.exists()]  # to undo on failure
        self.live = None
        self.waiting: list[tuple[int, dict]] | None = []  # values logged before Live was ready
        self.lock = threading.Lock()
        self.failure: BaseException | None = None
        # under DDP only the writer logs (every rank sees the same figures)
        self.opening = threading.Thread(target=self._open, daemon=True) if distributed.is_writer() else None
        if self.opening:
            self.opening.start()

    def _open(self) -> None:
        try:
            from dvclive import Live

            live = Live(dir=str(self.directory), dvcyaml=None, save_dvc_exp=False, report=None)
            with self.lock:
                for step, values in self.waiting:
                    self._write(live, step, values)
                self.live, self.waiting = live, None
        except BaseException as err:  # said by the stage's thread, in close()
            self.failure = err

    def _ready(self):
        """The open Live, once the thread that opens it is done (re-raising what it raised)."""
        if self.opening is not None:
            self.opening.join()
            self.opening = None
        if self.failure is not None:
            raise self.failure
        return self.live

    def __enter__(self) -> Log:
        return self

    def __exit__(self, kind, error, trace) -> None:
        if error is None or not distributed.is_writer():
            return
        if self.opening is not None:
            self.opening.join()  # before its files are removed
        shutil.rmtree(self.directory, ignore_errors=True)
        for folder in self.made[1:]:  # the folders above it that it made, if nothing else went there
            try:
                folder.rmdir()
            except OSError:
                break

    @staticmethod
    def _write(live, step: int, values: dict) -> None:
        live.step = step
        for name, value in values.items():
            if value is not None and math.isfinite(value):  # an empty epoch has no loss
                live.log_metric(name, value)

    def log(self, step: int, **values: float | None) -> None:
        if not distributed.is_writer():
            return
        if self.failure is not None:  # dvclive could not open its log: say so now, not after training
            raise self.failure
        with self.lock:
            if self.waiting is not None:
                self.waiting.append((step, values))
                return
        self._write(self.live, step, values)

    def close(self, timing: dict[str, float]) -> None:
        """Seconds the stage spent, apart from the metrics: timings differ from run to run."""
        if not distributed.is_writer():
            return
        self._ready().end()
        write_json(self.directory / paths.STAGE_TIMING, {name: round(s, 3) for name, s in timing.items()})


class Progress(Hook):
    """Shows and logs each epoch of a chunk's training."""

    def __init__(self, label: str, log: Log | None = None, terminal: bool | None = None) -> None:
        self.label, self.log = label, log
        self.terminal = sys.stderr.isatty() if terminal is None else terminal  # tqdm draws on stderr
        self.quiet = not distributed.is_writer()  # under DDP, one line per machine
        self.bar = self.ticker = None

    def before_fit(self, trainer: Trainer) -> None:
        self.ticker = Ticker(self.label, trainer.settings.epochs, unit="epoch ")
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
        if not self.quiet:
            self.ticker.tick(epoch, "".join(f", {k} {v}" for k, v in figures.items()))

    def after_fit(self, trainer: Trainer) -> None:
        if self.bar is not None:
            self.bar.close()
