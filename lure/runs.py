"""Runs: every method in `methods` runs once per run seed in `seeds`.

A run seed drives what differs between runs on the same data: the initial weights, the batch
order and the forgetting draws; `seed` stays the data's (split, chunks, replay reservoir,
held-out and corrupted sets), shared by every run. Stages take the method and the run seed on
the command line, as dvc.yaml writes them, and refuse ones that params.yaml does not list.
"""

from __future__ import annotations

from lure.config import Params
from lure.errors import LureError


def check_method(params: Params, method: str, source: str = "params.yaml") -> str:
    if method not in params.methods:
        raise LureError(f"methods.{method}: no such method in {source} (have {', '.join(params.methods)})")
    return method


def check_run_seed(params: Params, seed: int, source: str = "params.yaml") -> int:
    if seed not in params.seeds:
        listed = ", ".join(map(str, params.seeds))
        raise LureError(f"--seed {seed}: seeds in {source} lists only {listed}; add it there to run it")
    return seed


def stage_count(params: Params) -> int:
    """The stages `dvc repro` lays out (dvc.yaml): prepare, corrupt and report once, learn per
    seed, then per method and seed branch, a relearn per chunk after the first, and evaluate."""
    runs = len(params.methods) * len(params.seeds)
    return 3 + len(params.seeds) + runs * (2 + len(params.chunks))
