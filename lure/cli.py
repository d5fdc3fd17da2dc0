"""The `lure` command: check params.yaml, describe its settings, read results. The pipeline
itself runs with DVC (`dvc repro`); its stages are the modules in stages/."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from lure.config import PARAMS_FILE
from lure.errors import LureError, ParamsFile, reports_errors

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Learn, Unlearn, Relearn: compare warm start, scratch and LURE on chunked data.")


@app.command()
@reports_errors
def check(params_file: ParamsFile = PARAMS_FILE,
          with_data: bool = typer.Option(False, "--data", help="also read the data: do the chunks fit in it?")) -> None:
    """Check params.yaml without training: every key and method, the data folder, the device; with
    --data, the chunks against the data itself. Print what `dvc repro` will train."""
    from lure.config import load_params
    from lure.data import check_chunks, check_source, load_source
    from lure.device import pick_device
    from lure.methods import load_methods
    from lure.paths import stage_count

    p = load_params(params_file)
    methods = load_methods(p)
    where = check_source(p.data)
    device = pick_device(p.train)
    if with_data:
        check_chunks(p, load_source(p.data, p.seed).pool)
    data = p.data
    print(f"{params_file}: valid")
    print(f"  data: {data.source}, {where}; {p.n_chunks} chunks of {data.chunk_size} images, seed {p.seed}; "
          + ("they fit in the data" if with_data else "whether they fit needs the data: uv run lure check --data"))
    print(f"  run seeds: {', '.join(map(str, p.seeds))} (every method runs once per seed)")
    print(f"  model: {p.model.arch}; replay: {p.replay.mode}; {p.train.epochs} epochs per chunk on {device}")
    print(f"  methods: {', '.join(f'{name} ({m.kind})' for name, m in methods.items())}")
    relearn = len(p.chunks) * len(p.methods) * len(p.seeds)
    print(f"  stages per method and seed: chunks 2..{p.n_chunks} ({relearn} relearn stages in all)")
    print(f"  stages in all: {stage_count(len(p.methods), len(p.seeds), len(p.chunks))}")


@app.command()
@reports_errors
def results(params_file: ParamsFile = PARAMS_FILE,
            kept: Path | None = typer.Option(None, "--from", help="a folder of kept results (results/<name>)"),
            every_column: bool = typer.Option(False, "--all", help="every column, not the compact table"),
            columns: str | None = typer.Option(None, "--columns", help="these columns, comma-separated"),
            recovery: bool = typer.Option(False, "--recovery", help="also the updates until each chunk recovered"),
            timing: bool = typer.Option(True, help="the wall times of metrics/timing.json, where there are"),
            keep: Path | None = typer.Option(None, "--keep", help="copy the params file and the evaluations there"),
            ) -> None:
    """Print the comparison tables of the last `dvc repro` (metrics/evaluate/), or of kept results."""
    print(results_text(params_file, kept, every_column, columns, recovery, timing, keep), end="")


def results_text(params_file: str = PARAMS_FILE, kept: Path | None = None, every_column: bool = False,
                 columns: str | None = None, recovery: bool = False, timing: bool = True,
                 keep: Path | None = None) -> str:
    from lure import paths
    from lure.config import load_params
    from lure.io import read_json
    from lure.report import COLUMNS, COMPACT, load_evaluations, recovery_table, tables

    p = load_params(kept / "params.yaml" if kept else params_file)
    evaluations = load_evaluations(list(p.methods), p.seeds, kept / "evaluate" if kept else paths.EVALUATIONS)
    if keep:
        keep_results(params_file, evaluations, keep)
    compact = not (columns or every_column)
    shown = tuple(columns.split(",")) if columns else COLUMNS if every_column else COMPACT + ("wall_s",)
    times = read_json(paths.TIMING) if timing and not kept and paths.TIMING.is_file() else None
    text = tables(evaluations, shown, times, digits=3 if compact else 4)
    return text + ("\n\n" + recovery_table(evaluations) if recovery else "") + "\n"


def keep_results(params_file: str, evaluations: dict, folder: Path) -> None:
    """The params file, the evaluations and the plot data of a run, kept in `folder`
    (results/<name>), so that its tables and figures come from committed files."""
    import shutil

    from lure import paths
    from lure.io import write_json

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(params_file, folder / "params.yaml")
    for method, runs in evaluations.items():
        for seed, evaluation in runs.items():
            write_json(paths.evaluation(method, seed, folder / "evaluate"), evaluation)
    for plot in (paths.ACCURACY_PLOT, paths.STABILITY_PLOT, paths.CORRUPTION_PLOT, paths.RELIABILITY_PLOT):
        if plot.is_file():
            shutil.copyfile(plot, folder / plot.name)


README_BLOCK = re.compile(r"(<!-- lure results(?P<args>[^>]*) -->\n)(?P<body>.*?)(<!-- /lure results -->)", re.S)


@app.command()
@reports_errors
def readme(check_only: bool = typer.Option(False, "--check", help="only say whether README.md is current")) -> None:
    """Write README.md's result tables again from the committed metrics and results folders."""
    text = Path("README.md").read_text()
    current = readme_text(text)
    if check_only:
        if current != text:
            raise LureError("README.md's result tables differ from the committed results: uv run lure readme")
        print("README.md's result tables are current")
        return
    Path("README.md").write_text(current)


def readme_text(text: str) -> str:
    """README text with each block `<!-- lure results ARGS -->...<!-- /lure results -->` holding
    what `lure results ARGS --no-timing` prints."""
    import shlex

    def block(match: re.Match) -> str:
        options = shlex.split(match["args"])
        kept = Path(options[options.index("--from") + 1]) if "--from" in options else None
        columns = options[options.index("--columns") + 1] if "--columns" in options else None
        body = results_text(kept=kept, every_column="--all" in options, columns=columns,
                            recovery="--recovery" in options, timing=False)
        return match.group(1) + "\n" + body + "\n" + match.group(4)

    return README_BLOCK.sub(block, text)


@app.command(name="params")
def describe_params(markdown: bool = typer.Option(False, "--markdown", help="as Markdown tables")) -> None:
    """Describe every setting of params.yaml: its values, its default and what it does."""
    print(settings_reference(markdown), end="")


def settings_reference(markdown: bool = False) -> str:
    """Every section of the params file, every data source and every method kind, with their settings."""
    groups = "\n\n".join(_group(title, doc, rows, markdown) for title, doc, rows in setting_groups()) + "\n"
    if markdown:  # docs/params.md
        return ("# The settings of params.yaml\n\nWritten by `uv run lure params --markdown > docs/params.md` from "
                "the descriptions in the code (lure/config.py, lure/methods/); do not edit by hand.\n\n" + groups)
    return groups


def setting_groups() -> list[tuple[str, str, list[tuple[str, str, str, str]]]]:
    """(title, what the section is, its settings as (key, values, default, description)) for the
    params file, each data source, each method kind and the mitigations."""
    from lure.config import DATA_SOURCES, Params, describe
    from lure.methods import METHODS, Method
    from lure.methods.mitigations import Mitigations

    groups = [("params.yaml", Params.__doc__, describe(Params))]
    groups += [(f"data (source: {' | '.join(_tags(cls, 'source'))})", cls.__doc__, describe(cls, "data."))
               for cls in DATA_SOURCES]
    groups += [(f"methods.<name> (kind: {kind})", cls.__doc__,
                describe(cls, "methods.<name>.", exclude={"kind", "mitigate"})) for kind, cls in METHODS.items()]
    mitigate = ("methods.<name>.mitigate", "section", "", Method.model_fields["mitigate"].description)
    groups.append(("methods.<name>.mitigate (every kind)", Mitigations.__doc__,
                   [mitigate, *describe(Mitigations, "methods.<name>.mitigate.")]))
    return [(title, " ".join((doc or "").split()), list(rows)) for title, doc, rows in groups]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")  # a | inside a Markdown table cell


def _tags(cls, field: str) -> tuple[str, ...]:
    import typing

    return typing.get_args(cls.model_fields[field].annotation)


def _group(title: str, doc: str, rows: list[tuple[str, str, str, str]], markdown: bool) -> str:
    if markdown:
        lines = [f"### {title}", "", doc, "", "| key | values | default | what it does |", "|---|---|---|---|"]
        for key, kind, default, text in rows:
            default = f"`{_cell(default)}`" if default not in ("", "required") else default
            lines.append(f"| `{key}` | {_cell(kind)} | {default} | {_cell(text)} |")
        return "\n".join(lines)
    lines = [title, f"  {doc}"] if doc else [title]
    for key, kind, default, text in rows:
        lines.append(f"  {key}: {kind}" + (f" = {default}" if default else ""))
        if text:
            lines.append(f"      {text}")
    return "\n".join(lines)


if __name__ == "__main__":
    app()
