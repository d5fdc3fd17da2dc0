"""Warm start: keep every weight and continue from the previous chunk's model."""

from __future__ import annotations

from typing import Literal

from lure.methods.base import Method


class Warm(Method):
    """Continue from the previous chunk's model: nothing is forgotten."""

    kind: Literal["warm"] = "warm"
