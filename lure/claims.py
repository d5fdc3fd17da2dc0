"""Published claims tested against kept results (results/<name>): for each claim, the paired
difference over the run seeds (report.paired_differences) and a verdict from its 95% interval.

A claims file (YAML, a list) names per claim what was published and which comparison of which
kept study tests it. It is written before the study runs, so that the verdicts cannot be chosen
after seeing the results; `lure readme` renders its table into README.md.

A claim whose study has not run yet (no results folder) is listed as such.

The verdict, for a claim that `method` − `baseline` of `metric` is above 0 (`direction: ">"`) or
below it (`"<"`), with `effect` the published difference where the claim gives one as a number:
- reproduced: the interval excludes 0 on the claimed side ("smaller than published" where it
  also lies below the published effect);
- opposite: the interval excludes 0 on the other side;
- no effect of the published size: the interval includes 0 but not the published effect, so an
  effect that large is ruled out in this setting (which may differ from the published one);
- inconclusive: the interval includes 0 (and the published effect, where there is one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lure.errors import LureError


class Claim(BaseModel):
    model_config = ConfigDict(extra="forbid")

    claim: str = Field(description="what was claimed, and by whom")
    published: str = Field(description="the published figures, as published (or what the source says)")
    effect: float | None = Field(None, description="the published difference in `metric`'s units, where there is one")
    results: Path = Field(description="the kept study that tests it (results/<name>)")
    preset: Path | None = Field(None, description="the params file (presets/) whose run makes `results`")
    method: str
    baseline: str
    metric: str
    method_metric: str | None = Field(None, description="the method's metric where it is not `metric`: another "
                                                        "network's accuracy, e.g. Hare & Tortoise's tortoise_acc")
    direction: Literal[">", "<"] = Field(description="the sign the claim gives method − baseline")

    @model_validator(mode="after")
    def effect_has_the_claimed_sign(self) -> Claim:
        if self.effect is not None and (self.effect > 0) != (self.direction == ">"):
            raise ValueError(f"effect {self.effect} has the sign opposite to direction {self.direction!r}")
        return self


def load_claims(path: Path) -> list[Claim]:
    import yaml

    from lure.config import error_lines

    if not path.is_file():
        raise LureError(f"{path}: no such claims file")
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, list):
        raise LureError(f"{path} must be a list of claims")
    claims = []
    for i, item in enumerate(raw):
        try:
            claims.append(Claim.model_validate(item))
        except ValidationError as err:
            raise LureError(f"{path}, claim {i + 1} is invalid:\n{error_lines(err)}") from None
    return claims


def verdict(ci95: list[float] | None, direction: str, effect: float | None) -> str:
    """The verdict on a claim from the 95% interval of method − baseline (module docstring)."""
    if ci95 is None:
        return "one seed: no interval"
    sign = 1 if direction == ">" else -1
    lower, upper = sorted((sign * ci95[0], sign * ci95[1]))  # in the claimed direction: > 0 supports it
    published = None if effect is None else sign * effect
    if lower > 0:
        return "reproduced, smaller than published" if published is not None and published > upper else "reproduced"
    if upper < 0:
        return "opposite"
    if published is not None and published > upper:
        return "no effect of the published size"
    return "inconclusive"


def claims_table(path: Path, root: Path = Path(".")) -> str:
    """One row per claim of the claims file at `path` (study folders relative to `root`)."""
    from lure.report import load_kept, paired_differences, signed

    lines = ["| claim | published | tested on | ours: method − baseline, paired by seed | 95% interval | verdict |",
             "|---|---|---|---:|---:|---|"]
    studies: dict[Path, dict] = {}
    for c in load_claims(path):
        folder = root / c.results
        if not folder.is_dir():  # a claim fixed before its study ran
            preset = f" ({c.preset.as_posix()})" if c.preset else ""
            lines.append(f"| {c.claim} | {c.published} | `{c.results.name}`{preset} | {_compared(c)} | - | "
                         f"not run yet |")
            continue
        if folder not in studies:
            studies[folder] = load_kept(folder)
        d = paired_differences(studies[folder], c.baseline, c.metric, c.method_metric)
        if c.method not in d:
            raise LureError(f"{path}: {c.method} is not a method of {c.results}")
        d = d[c.method]
        interval = "-" if d["ci95"] is None else f"[{signed(d['ci95'][0])}, {signed(d['ci95'][1])}]"
        ours = f"{_compared(c)}: {signed(d['mean'])} ({d['n']} seeds)"
        lines.append(f"| {c.claim} | {c.published} | `{c.results.name}` | {ours} | {interval} | "
                     f"{verdict(d['ci95'], c.direction, c.effect)} |")
    source = f"claims and their tests: {path.as_posix()}; `uv run lure readme` writes this table"
    return "\n".join(lines) + f"\n\n({source})\n"


def _compared(c: Claim) -> str:
    if c.method_metric:
        return f"{c.method}'s {c.method_metric} − {c.baseline}'s {c.metric}"
    return f"{c.method} − {c.baseline}, {c.metric}"
