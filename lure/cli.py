"""The `lure` command: check params.yaml and read results. The pipeline itself runs with DVC
(`dvc repro`); its stages are the modules in stages/."""

from __future__ import annotations

from pathlib import Path

import typer

from lure.errors import reports_errors

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Learn, Unlearn, Relearn: compare warm start, scratch and LURE on chunked data.")


@app.command()
@reports_errors
def check(params: Path = Path("params.yaml")) -> None:
    """Validate params.yaml and print what `dvc repro` will train."""
    from lure.config import load_params
    from lure.runs import stage_count

    p = load_params(params)
    data = p.data
    print(f"{params}: valid")
    print(f"  data: {data.source}, {p.n_chunks} chunks of {data.chunk_size} images, seed {p.seed}")
    print(f"  run seeds: {', '.join(map(str, p.seeds))} (every method runs once per seed)")
    print(f"  model: {p.model.arch}; replay: {p.replay.mode}; {p.train.epochs} epochs per chunk on {p.train.device}")
    print(f"  methods: {', '.join(f'{name} ({m.kind})' for name, m in p.methods.items())}")
    relearn = len(p.chunks) * len(p.methods) * len(p.seeds)
    print(f"  stages per method and seed: chunks 2..{p.n_chunks} ({relearn} relearn stages in all)")
    print(f"  stages in all: {stage_count(p)}")


@app.command()
@reports_errors
def results(params: Path = Path("params.yaml")) -> None:
    """Print the comparison tables of the last `dvc repro` (from metrics/evaluate/)."""
    from lure.config import load_params
    from lure.report import load_evaluations, tables

    p = load_params(params)
    print(tables(load_evaluations(list(p.methods), p.seeds)))

