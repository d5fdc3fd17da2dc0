"""The `lure` command: check params.yaml, describe its settings, read results. The pipeline
itself runs with DVC (`dvc repro`); its stages are the modules in stages/."""

from __future__ import annotations

import re
import statistics
from pathlib import Path

import click
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
    import numpy as np

    from lure.chunks import check_chunks, describe_sizes
    from lure.config import load_params
    from lure.device import pick_device
    from lure.methods import load_methods
    from lure.paths import stage_count
    from lure.pipelines import METHOD_TEMPLATE, require_current
    from lure.sources import check_source, known_pool_labels, load_source

    p = load_params(params_file)
    methods = load_methods(p)
    where = check_source(p.data)
    device = pick_device(p.train)
    labels = known_pool_labels(p.data, p.seed)  # the digits' and torchvision's sizes: no need to read them
    if with_data:  # what is there: prepare is the stage that downloads
        data = p.data.model_copy(update={"download": False}) if hasattr(p.data, "download") else p.data
        labels = np.asarray(load_source(data, p.seed).pool.y)
    if labels is not None:
        check_chunks(p, labels)
    data = p.data
    print(f"{params_file}: valid")
    print(f"  data: {data.source}, {where}; {describe_sizes(data.chunk_size, p.n_chunks)}, seed {p.seed}; "
          + (f"they fit in its {len(labels)} training images" if labels is not None
             else "whether they fit needs the data: uv run lure check --data"))
    print(f"  run seeds: {', '.join(map(str, p.seeds))} (every method runs once per seed)")
    print(f"  model: {p.model.arch}; replay: {p.replay.mode}; {p.train.epochs} epochs per chunk on {device}")
    print(f"  methods: {', '.join(f'{name} ({m.kind})' for name, m in methods.items())}")
    relearn = len(p.chunks) * len(p.methods) * len(p.seeds)
    print(f"  stages per method and seed: chunks 2..{p.n_chunks} ({relearn} relearn stages in all)")
    print(f"  stages in all: {stage_count(len(p.methods), len(p.seeds), len(p.chunks))}")
    # in a project (its template there), whether the methods' pipeline files match params.yaml, which they read
    if METHOD_TEMPLATE.is_file() and Path(params_file).resolve() == Path(PARAMS_FILE).resolve():
        require_current(list(p.methods))
        print("  pipelines: one per method, current (pipelines/<method>/dvc.yaml)")


@app.command()
@reports_errors
def pipelines(check_only: bool = typer.Option(False, "--check", help="only say whether they are current")) -> None:
    """Write pipelines/<method>/dvc.yaml, each method's stages, for the methods of params.yaml, and
    remove those of methods gone. Run it after adding or removing a method (a preset copied over
    params.yaml included); seeds and chunks need no new files."""
    from lure.config import load_params
    from lure.pipelines import require_current, write_pipelines

    methods = list(load_params(PARAMS_FILE).methods)
    if check_only:
        require_current(methods)
        print(f"pipelines: current for {', '.join(methods)}")
        return
    written, removed = write_pipelines(methods)
    for file in written:
        print(f"wrote {file}")
    for file in removed:
        print(f"removed {file}")
    if written or removed:
        print("To track the changes with git (and queue experiments with them), run:\n\tgit add pipelines")
    else:
        print(f"pipelines: current for {', '.join(methods)}")


@app.command()
@reports_errors
def results(params_file: ParamsFile = PARAMS_FILE,
            kept: Path | None = typer.Option(None, "--from", help="a folder of kept results (results/<name>)"),
            every_column: bool = typer.Option(False, "--all", help="every column, not the compact table"),
            columns: str | None = typer.Option(None, "--columns", help="these columns, comma-separated"),
            recovery: bool = typer.Option(False, "--recovery", help="also the updates until each chunk recovered"),
            convergence: bool = typer.Option(False, "--convergence", help="also how far each chunk's "
                                             "training went: the last epoch's training accuracy and the epochs "
                                             "it took (train.stop_at_train_acc)"),
            paired: str | None = typer.Option(None, "--paired", help="also each method's difference from this "
                                              "one, paired by run seed, with its 95% interval (for the "
                                              "--columns given, else final_acc)"),
            paired_on: str | None = typer.Option(None, "--paired-on", help="the metrics of --paired, "
                                                 "comma-separated (default: the --columns given, else final_acc)"),
            timing: bool = typer.Option(True, help="the wall times of metrics/timing.json, where there are"),
            keep: Path | None = typer.Option(None, "--keep", help="copy the params file and the evaluations there"),
            ) -> None:
    """Print the comparison tables of the last `dvc repro` (metrics/evaluate/), or of kept results."""
    print(results_text(params_file, kept, every_column, columns, recovery, timing, keep, paired, convergence,
                       paired_on), end="")


def results_text(params_file: str = PARAMS_FILE, kept: Path | None = None, every_column: bool = False,
                 columns: str | None = None, recovery: bool = False, timing: bool = True,
                 keep: Path | None = None, paired: str | None = None, convergence: bool = False,
                 paired_on: str | None = None) -> str:
    from lure import paths
    from lure.config import load_params
    from lure.io import read_json
    from lure.report import (
        COLUMNS,
        COMPACT_TIMED,
        convergence_table,
        load_evaluations,
        paired_table,
        recovery_table,
        tables,
    )

    source = kept / "params.yaml" if kept else Path(params_file)
    p = load_params(source)
    evaluations = load_evaluations(list(p.methods), p.seeds, kept / "evaluate" if kept else paths.EVALUATIONS)
    if keep:
        keep_results(source, evaluations, keep, with_plots=kept is None)
    compact = not (columns or every_column)
    shown = tuple(c.strip() for c in columns.split(",")) if columns else COLUMNS if every_column else COMPACT_TIMED
    pairs = tuple(c.strip() for c in paired_on.split(",")) if paired_on else ()
    if pairs and not paired:
        raise LureError("--paired-on: pairs with the method of --paired, which is missing")
    for option, names in (("--columns", shown), ("--paired-on", pairs)):
        unknown = [c for c in names if c not in COLUMNS]
        if unknown:
            raise LureError(f"{option}: no column {', '.join(unknown)} (the columns: {', '.join(COLUMNS)})")
    # wall times: a kept run's are fixed at keeping (timing.json there); a live run's only on request
    times_file = kept / paths.TIMING.name if kept else paths.TIMING if timing else None
    times = read_json(times_file) if times_file and times_file.is_file() else None
    text = tables(evaluations, shown, times, digits=3 if compact else 4)
    text += "\n\n" + recovery_table(evaluations) if recovery else ""
    text += "\n\n" + convergence_table(evaluations) if convergence else ""
    if paired:  # over the columns asked for, but the wall times, which are no run's metrics
        metrics = pairs or (tuple(c for c in shown if c != "wall_s") if columns else ("final_acc",))
        text += "\n\n" + paired_table(evaluations, paired, metrics, digits=3 if compact else 4)
    return text + "\n"


def keep_results(params_file: Path, evaluations: dict, folder: Path, with_plots: bool) -> None:
    """The params file, the evaluations and (from a run's metrics/) the plot data and wall times,
    kept in `folder` (results/<name>), so that its tables and figures come from committed files."""
    import shutil

    from lure import paths
    from lure.io import write_json

    folder.mkdir(parents=True, exist_ok=True)
    if params_file.resolve() != (folder / "params.yaml").resolve():
        shutil.copyfile(params_file, folder / "params.yaml")
    for method, runs in evaluations.items():
        for seed, evaluation in runs.items():
            write_json(paths.evaluation(method, seed, folder / "evaluate"), evaluation)
    for plot in (*paths.PLOTS, paths.TIMING):  # the report's outputs but summary.json, which the evaluations give
        if with_plots and plot.is_file():
            shutil.copyfile(plot, folder / plot.name)


README_BLOCK = re.compile(r"(<!-- lure (?P<kind>results|bench|claims)(?P<args>[^>]*) -->\n)(?P<body>.*?)"
                          r"(<!-- /lure (?P=kind) -->)", re.S)


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
    what `lure results ARGS --no-timing` prints, each `<!-- lure bench NAME -->` block the
    table of bench/results/NAME.json, and each `<!-- lure claims FILE -->` block the verdicts on
    the claims of FILE (lure/claims.py)."""
    import shlex

    opened = sum(text.count(f"<!-- lure {kind}") for kind in ("results", "bench", "claims"))
    blocks = list(README_BLOCK.finditer(text))
    if len(blocks) != opened:
        raise LureError(f"README.md: {opened} generated blocks open, {len(blocks)} close as they should")

    def block(match: re.Match) -> str:
        words = shlex.split(match["args"])
        if match["kind"] == "bench":
            if len(words) != 1:
                raise LureError(f"README.md: `<!-- lure bench{match['args']} -->` names no one result file")
            body = bench_table(words[0])
        elif match["kind"] == "claims":
            from lure.claims import claims_table

            if len(words) != 1:
                raise LureError(f"README.md: `<!-- lure claims{match['args']} -->` names no one claims file")
            body = claims_table(Path(words[0]))
        else:  # the options as `lure results` reads them
            command = typer.main.get_command(app).commands["results"]
            try:
                options = command.make_context("results", [*words, "--no-timing"]).params
            except click.ClickException as err:
                raise LureError(f"README.md: `<!-- lure results{match['args']} -->`: {err.format_message()}") from None
            body = results_text(kept=options["kept"], every_column=options["every_column"],
                                columns=options["columns"], recovery=options["recovery"], timing=False,
                                paired=options["paired"], convergence=options["convergence"],
                                paired_on=options["paired_on"])
        return match.group(1) + "\n" + body + "\n" + match.group(5)

    return README_BLOCK.sub(block, text)


def bench_table(name: str) -> str:
    """A benchmark's committed result (bench/results/NAME.json) as a Markdown table."""
    from lure.io import read_json

    path = Path("bench/results") / f"{name}.json"
    if not path.is_file():
        raise LureError(f"{path}: no such result; run the benchmark of bench/ that writes it")
    kind = name.split("-")[0]
    tables = {"pipeline": _pipeline_table, "throughput": _throughput_table, "corruptions": _corruptions_table,
              "images": _images_table, "reproduce": _reproduce_table, "gpucheck": _gpucheck_table,
              "reproducibility": _reproducibility_table, "methods": _methods_table, "stagecost": _stagecost_table,
              "queue": _queue_table, "dvcscaling": _dvcscaling_table, "dvclayout": _dvclayout_table,
              "fireharness": _fireharness_table}
    if kind not in tables:
        raise LureError(f"README.md: `<!-- lure bench {name} -->`: no table for {kind} results")
    lines, about = tables[kind](read_json(path))
    return "\n".join(lines) + f"\n\n({about}; {path.as_posix()})\n"


def _stagecost_table(r: dict) -> tuple[list[str], str]:
    """bench/stage_cost.py: a small stage's wall time by phase, then what DVC adds."""
    seconds = r["seconds"]
    phases = {"startup": "the interpreter", "imports": "imports (torch, pydantic, the library)",
              "params": "reading params.yaml", "device": "the device, the CPU kernels pinned",
              "data": "chunks, their check, replay sets", "check": "of which the chunks' check (sampled hashes)",
              "model": "the network, its checkpoints",
              "log": "dvclive's log (opened in a thread while the stage goes on)", "forgetting": "the method",
              "training": "training, with its continual evaluation", "evaluation": "bookkeeping after training",
              "writing": "the checkpoint and the metrics", "other": "the rest, exit included"}
    runs = [r] + ([r["before"]] if "before" in r else [])
    lines = ["| phase | seconds |" + (f" at {r['before']['commit'][:7]} (before) |" if "before" in r else ""),
             "|---|---:|" + ("---:|" if "before" in r else "")]

    def row(label: str, key: str, bold: bool = False) -> str:
        cells = [f"**{run[key]:.3f}**" if bold else f"{run[key]:.3f}" for run in runs]
        return f"| {label} | " + " | ".join(cells) + " |"

    lines += ["| " + about + " | " + " | ".join(f"{run['seconds'].get(name, 0.0):.3f}" for run in runs) + " |"
              for name, about in phases.items() if name in seconds]
    lines += ["| **the stage's wall time** | " + " | ".join(f"**{run['seconds']['wall']:.3f}**" for run in runs) + " |",
              row(f"outside training (target ≤ {r['target_outside_training_s']})", "outside_training_s"),
              row("`dvc repro --force --single-item` of the stage", "dvc_repro_s"),
              row("of which DVC's own", "dvc_own_s")]
    h = r["chunk_check"]
    lines += ["", "| the chunks' check at a stage's start | seconds per GB |", "|---|---:|",
              f"| full md5 of every chunk file (before) | {h['full_md5_s_per_gb']:.2f} |",
              f"| size and 16 sampled blocks of 64 KiB per file (now) | {h['sampled_s_per_gb']:.4f} |"]
    m = r["machine"]
    return lines, (f"{r['stage']}; medians of {r['runs']} runs; {m['cores']} cores, {m['cpu']}; torch "
                   f"{r['versions']['torch']}; commit {r['commit'][:10]}")


def _dvcscaling_table(r: dict) -> tuple[list[str], str]:
    """bench/dvc_scaling.py: DVC's own time against the number of stages, in all and per stage."""
    lines = ["| stages | pipeline files | code deps | first `dvc repro` (s) | per stage | restore all from the "
             "run-cache (s) | per stage | no-op `dvc repro` (s) | one stage's bookkeeping (s) | "
             "largest dvc.lock (KB) | its parse, pure / C (s) |",
             "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in r["rows"]:
        parse = row["parse_s"]
        deps = row.get("code_deps", 20)
        deps = f"{deps} files" if isinstance(deps, int) else deps
        per_file = row.get("stages_per_file")
        files = f"{-(-row['stages'] // per_file)} of {per_file} stages" if per_file else "1"
        lines.append(f"| {row['stages']} | {files} | {deps} | {row['first_repro_s']} | {row['per_stage_s']['first']} | "
                     f"{row['restore_s']} | {row['per_stage_s']['restore']} | {row['noop_repro_s']} | "
                     f"{row['one_stage_s']} | {row['lock_kb']} | {parse['pure_python']} / {parse['c_loader']} |")
    m = r["machine"]
    loader = "C loader installed" if r["c_loader_installed"] else "pure-Python loader"
    return lines, (f"{m['cores']} cores, {m['cpu']}; DVC {r['versions']['dvc']}, {loader}; "
                   f"commit {r['commit'][:10]}")


def _dvclayout_table(r: dict) -> tuple[list[str], str]:
    """bench/dvc_layout.py: a study's stages restored from the run-cache, per pipeline layout."""
    lines = ["| layout | commit | pipeline files | stages restored | stages run | restore all (s) | per stage (s) "
             "| no-op `dvc repro` (s) | largest dvc.lock (KB) |", "|---|---|---:|---:|---|---:|---:|---:|---:|"]
    lines += [f"| {row['layout']} | {row['commit']} | {row['pipeline_files']} | {row['stages_restored']} | "
              f"{', '.join(row['stages_run']) or '-'} | {row['restore_s']} | {row['per_restored_stage_s']:.3f} | "
              f"{row['noop_repro_s']} | {row['largest_lock_kb']} |" for row in r["rows"]]
    m, v = r["machine"], r["versions"]
    return lines, (f"{r['preset']}; {m['cores']} cores, {m['cpu']}; DVC {v['dvc']}, Python {v['python']}; "
                   f"commit {r['commit'][:10]}")


def _fireharness_table(r: dict) -> tuple[list[str], str]:
    """bench/fire_harness.py: FIRE's own loop on a preset's setting, beside lure's run of that preset
    (its kept results): test accuracy after each chunk, and the final accuracies' difference with
    Welch's 95% interval (the two sides' seeds draw different images, so they are not paired)."""
    from scipy.stats import ttest_ind

    from lure.report import load_kept

    kept = Path(r["lure_results"])
    ours = load_kept(kept) if (kept / "params.yaml").is_file() else {}
    lines = ["| method | FIRE's harness: after chunk 1 / 2 / ... | lure: after chunk 1 / 2 / ... | "
             "final: FIRE's harness | final: lure | lure − FIRE's harness, 95% interval (Welch) |",
             "|---|---|---|---:|---:|---:|"]

    def mean_sd(values: list[float]) -> str:
        return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"

    for method, m in r["methods"].items():
        theirs = [run["test_acc"][-1] for run in m["runs"]]
        by_chunk = " / ".join(f"{a:.3f}" for a in m["test_acc_by_chunk"]["mean"])
        runs = list(ours.get(method, {}).values())
        if not runs:
            lines.append(f"| {method} | {by_chunk} | not run yet | {mean_sd(theirs)} | - | - |")
            continue
        chunks = sorted(runs[0]["chunks"], key=lambda name: int(name.split("_")[1]))
        lure_by_chunk = " / ".join(f"{statistics.fmean(run['chunks'][c]['test_acc'] for run in runs):.3f}"
                                   for c in chunks)
        finals = [run["final"]["final_acc"] for run in runs]
        low, high = ttest_ind(finals, theirs, equal_var=False).confidence_interval(0.95)
        lines.append(f"| {method} | {by_chunk} | {lure_by_chunk} | {mean_sd(theirs)} | {mean_sd(finals)} | "
                     f"{statistics.fmean(finals) - statistics.fmean(theirs):+.3f} [{low:+.3f}, {high:+.3f}] |")
    m, threads = r["machine"], r["machine"]["torch_threads"]
    ours_seeds = sorted({seed for runs in ours.values() for seed in runs})
    fire_commit = f", FIRE at {r['fire']['commit']}" if r.get("fire", {}).get("commit") else ""
    return lines, (f"mean ± std over run seeds {r['seeds']} (FIRE's harness) and {ours_seeds or '-'} (lure); FIRE's "
                   f"side: {m['cores']} cores, {m['cpu']}, {threads} thread{'s' if threads > 1 else ''}, torch "
                   f"{r['versions']['torch']}, {r['seconds'] / 60:.1f} minutes, commit {r['commit'][:10]}"
                   f"{fire_commit}; lure's: {kept.as_posix()}")


def _queue_table(r: dict) -> tuple[list[str], str]:
    """bench/dvc_queue.py: one `dvc repro` against DVC's queue with N workers, same params, same machine."""
    q, seq = r["queued"], r["sequential"]
    same = ("every output byte-identical" if not r["outputs_that_differ"] else
            f"{len(r['outputs_that_differ'])} of {r['outputs']} outputs differ")
    lines = ["| run | seconds | stages |", "|---|---:|---|",
             f"| one `dvc repro` | {seq['seconds']} | {seq['stages_run']} run |",
             f"| DVC's queue, {q['jobs']} workers, one experiment per seed | {q['seconds']} | "
             f"{q['stages_shared']} shared first, then {q['experiments']} experiments ({q['queued_s']} s in all); "
             f"in the workspace {q['stages_restored']} restored from the run-cache and {q['stages_run']} run "
             f"({q['workspace_s']} s) |",
             f"| speed-up (target ≥ {r['target_speedup']}) | {r['speedup']} | {same} |"]
    m = r["machine"]
    return lines, (f"{r['preset']} with seeds {r['seeds']}, cpu_kernels {r['cpu_kernels']}; {m['cores']} cores, "
                   f"{m['cpu']}; DVC {r['versions'].get('dvc', '?')}; torch "
                   f"{r['versions']['torch']}; commit {r['commit'][:10]}")


def _methods_table(r: dict) -> tuple[list[str], str]:
    """bench/methods.py: each method against its authors' function on the same model, weights and
    batches; where a row misses the target, why (a footnote per distinct reason)."""
    target = f"{r['target']:.0e}".replace("e-0", "e-")
    lines = [f"| method | official function | model | compared | max abs difference | within {target} |",
             "|---|---|---|---|---:|---|"]
    reasons: list[str] = []
    for row in r["rows"]:
        within = "yes"
        if not row["within_target"]:
            why = row.get("why") or row["note"]
            reasons += [why] if why not in reasons else []
            within = f"no ({reasons.index(why) + 1})"
        diff = row["max_abs_diff"]
        lines.append(f"| {row['method']} | `{row['official']}` | {row['model']} | {row['compared']} | "
                     f"{'0' if diff == 0 else f'{diff:.2e}'} | {within} |")
    for i, why in enumerate(reasons, start=1):
        lines += ["", f"({i}) {why}"]
    m = r["machine"]
    return lines, f"{m['cores']} cores, {m['cpu']}; fp32; torch {r['versions']['torch']}; commit {r['commit'][:10]}"


def _pipeline_table(r: dict) -> tuple[list[str], str]:
    lines = ["| step | seconds | target |", "|---|---:|---:|",
             f"| `uv sync --compile-bytecode` (wheels cached) | {r['install_s']} | - |",
             f"| first `uv run dvc repro` after install ({r['stages_run']} stages run) | {r['first_repro_s']} | "
             f"≤ {r['targets']['first_repro_s']} |",
             f"| no-op `uv run dvc repro` | {r['noop_repro_s']} | ≤ {r['targets']['noop_repro_s']} |"]
    if "tests_s" in r:
        lines.append(f"| `uv run pytest` ({r['tests']}) | {r['tests_s']} | ≤ {r['targets']['tests_s']} |")
    return lines, (f"{r['machine']['cores']} cores, {r['machine']['cpu']}; torch {r['versions']['torch']}; "
                   f"commit {r['commit'][:10]}")


def _throughput_table(r: dict) -> tuple[list[str], str]:
    lines = ["| model | batch | ours (img/s) | baseline (img/s) | ours / baseline | eval (img/s) |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {row['model']} | {row['batch']} | {row['train_img_s']} | "
              f"{row.get('baseline_train_img_s', '-')} | {row.get('speedup', '-')} | {row['eval_img_s']} |"
              for row in r["rows"]]
    return lines, f"{r['device']}; torch {r['torch']}; commit {r['commit'][:10]}"


def _reproducibility_table(r: dict) -> tuple[list[str], str]:
    """bench/reproducibility.py: which variation of the environment changes a run's weights, with
    fast and with portable kernels; then what portable costs."""
    changes = r["changes_the_models"]
    lines = ["| variation (one process each) | changes the models: fast | portable |", "|---|---|---|"]
    said = {True: "yes", False: "no"}
    lines += [f"| {name} | {said[changes['fast'][name]]} | {said[changes['portable'][name]]} |"
              for name in changes["fast"]]
    seconds, ratio = r["seconds"], r["seconds"]["portable_over_fast"]
    runs = {"default_pipeline_repro_s": "`dvc repro` of the default pipeline, from a fresh copy",
            "cifar_training_s": "training the small CNN (width 32) on 2,048 CIFAR-10 images, 2 epochs"}
    lines += ["", "| run | fast (s) | portable (s) | portable / fast |", "|---|---:|---:|---:|"]
    lines += [f"| {about} | {seconds['fast'][key]} | {seconds['portable'][key]} | {ratio[key]} |"
              for key, about in runs.items()]
    m = r["machine"]
    return lines, (f"{m['cores']} cores, {m['cpu']} (torch dispatches {m['capability']}); "
                   f"torch {r['versions']['torch']}; commit {r['commit'][:10]}")


def _gpucheck_table(r: dict) -> tuple[list[str], str]:
    """The device check (bench/gpu/check.py collect): each figure against its target, then what
    the other parts found."""
    f, t, parts = r["figures"], r["targets"], r["parts"]

    def number(value, digits: int = 0) -> str:
        return "not measured" if value is None else f"{value:,.{digits}f}"

    lines = ["| figure | measured | target |", "|---|---:|---:|",
             f"| ResNet-18 training at batch 512 (img/s) | {number(f['train_img_s_batch512'])} | "
             f"≥ {t['train_img_s_batch512']:,} |",
             f"| ResNet-18 training at batch 64 (img/s) | {number(f['train_img_s_batch64'])} | "
             f"≥ {t['train_img_s_batch64']:,} |",
             f"| ours / the baseline at batch 64, same run | {number(f['speedup_batch64'], 2)} | "
             f"≥ {t['speedup_batch64']} |",
             f"| ours / the baseline at batch 512, same run | {number(f['speedup_batch512'], 2)} | - |",
             f"| evaluation (img/s) | {number(f['eval_img_s'])} | ≥ {t['eval_img_s']:,} |",
             f"| compiled training at batch 512 (img/s) | {number(f['compiled_train_img_s_batch512'])} | - |",
             f"| the paper preset, warm + scratch + LURE (minutes, projected) | "
             f"{number(f.get('paper_minutes_warm_scratch_lure'), 1)} | ≤ {t['paper_minutes_warm_scratch_lure']} |"]
    tests, determinism, pipeline = (parts.get(name, {}) for name in ("tests", "determinism", "pipeline"))
    same = ("not run" if "identical" not in determinism else
            "identical weights" if determinism["identical"] else "weights differ")
    repro = ("not run" if not pipeline else f"{len(pipeline.get('stages') or {})} stages in {pipeline['seconds']} s"
             + ("" if pipeline.get("ok") else ", not finished"))
    sharing = parts.get("sharing", {})
    lines += [f"| two trainings sharing the device at once, together / one alone (ResNet-18, batch 64) | "
              f"{number(sharing.get('together_over_alone'), 2)} | - |"]
    lines += [f"| device tests | {tests.get('summary') or 'not run'} | all pass |",
              f"| the same training in two processes | {same} | identical |",
              f"| `dvc repro` of presets/gpu-check.yaml | {repro} | - |"]
    v = r["versions"]
    return lines, (f"{r['device']}; torch {v['torch']}, CUDA {v['cuda']}, cuDNN {v['cudnn']}, driver {v['driver']}; "
                   f"commit {(r['commit'] or 'unknown')[:10]}"
                   + (f"; not run: {', '.join(r['not_run'])}" if r["not_run"] else ""))


def _images_table(r: dict) -> tuple[list[str], str]:
    """Prepare at each scale, training resident vs streamed, and the extrapolation to 250,000 photos."""
    lines = ["| photos | prepare (s) | prepare (img/s) | peak memory (MB) | + mapped file pages (MB) | disk (MB) |",
             "|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {row['photos']} | {row['seconds']} | {row['prepare_img_s']} | {row['peak_anon_mb']} | "
              f"{row['peak_file_mb']} | {row['disk_mb']} |" for row in r["rows"]]
    t, e = r["rows"][0], r["extrapolated"]
    lines += ["", "| training (small_cnn, batch 32, resized_crop_flip) | resident | streamed |", "|---|---:|---:|",
              f"| img/s | {t['resident_train_img_s']} | {t['streamed_train_img_s']} |",
              "", f"| {e['photos']:,} photos at {r['image_size']} pixels, extrapolated | |", "|---|---:|",
              f"| prepare, this machine | {e['prepare_hours']} h |",
              f"| disk, data/prepared (every photo in a chunk; DVC's cache holds a second copy unless linked) | "
              f"{e['prepared_disk_gb']} GB |",
              f"| peak memory while preparing, page cache apart (not extrapolated: measured at "
              f"{r['rows'][-1]['photos']} photos, {t['peak_anon_mb']} MB at {t['photos']}) | "
              f"{r['rows'][-1]['peak_anon_mb']} MB |",
              f"| device memory to keep all of them resident (uint8; computed) | {e['resident_device_gb']} GB |",
              f"| the same for rimagenet-paper.yaml (8 x 6250 + 3450 test; computed) | "
              f"{e['rimagenet_paper_resident_device_gb']} GB |"]
    m = r["machine"]
    return lines, (f"{m['cores']} cores, {m['cpu']}; streamed reads {t['streamed_read_img_s']} img/s in random "
                   f"batches of 128; torch {r['torch']}; commit {r['commit'][:10]}")


def _reproduce_table(r: dict) -> tuple[list[str], str]:
    """The "Does it reproduce?" studies: what each ran and its `dvc repro`'s wall time."""
    lines = ["| study (presets/cifar10-NAME.yaml) | run seeds | methods | stages run | minutes |",
             "|---|---:|---|---:|---:|"]
    for name, s in r["studies"].items():
        # stages kept from an earlier run are not in the minutes: say so beside them
        kept = f" (+{s['stages_skipped']} kept from an earlier run)" if s.get("stages_skipped") else ""
        variant = f" (variant: {', '.join(s['overrides'])})" if s.get("overrides") else ""
        if s.get("jobs"):  # DVC's queue: its experiments' stages, then the workspace's restore and report
            variant += f" (DVC's queue, {s['jobs']} workers, an experiment per {s['split'][:-1]})"
            kept = f" ({s['stages_restored']} restored from the run-cache)"
        if s.get("beside"):  # run at the same time as other studies, each in its own clone
            variant += f" (at once with {', '.join(s['beside'])}, {s['threads']} thread each)"
        if s.get("note"):  # e.g. stages another worker ran beside it, restored here
            variant += f" ({s['note']})"
            kept = f" (+{s['stages_skipped']} restored from the run-cache)" if s.get("stages_skipped") else ""
        lines.append(f"| {name}{variant} | {len(s['seeds'])} | {', '.join(s['methods'])} | "
                     f"{s['stages_run']}{kept} | {s['seconds'] / 60:.1f} |")
    one_by_one = [s for s in r["studies"].values() if not (s.get("overrides") or s.get("jobs") or s.get("beside"))]
    total = sum(s["seconds"] for s in one_by_one) / 60
    variants = any(s.get("overrides") for s in r["studies"].values())
    label = "all run one by one" + (", variants apart" if variants else "")
    lines.append(f"| {label} | | | {sum(s['stages_run'] for s in one_by_one)} | {total:.1f} |")
    at_once = [name for name, s in r["studies"].items() if s.get("beside")]
    if at_once:  # their wall time is the longest one's
        lines.append(f"| {', '.join(at_once)}, at once | | | {sum(r['studies'][n]['stages_run'] for n in at_once)} | "
                     f"{max(r['studies'][n]['seconds'] for n in at_once) / 60:.1f} |")
    machines = {f"{s['machine']['cores']} cores, {s['machine']['cpu']}; torch {s['torch']}; commit {s['commit'][:10]}"
                for s in r["studies"].values()}
    return lines, "; ".join(sorted(machines))


def _corruptions_table(r: dict) -> tuple[list[str], str]:
    """Per corruption, severities 1..5 side by side: ours against the original on the same input
    (or the original's random draws), then ours and the original's distance to the clean image."""
    def severities(row: dict, value) -> str:
        return " / ".join(value(s) for s in row["severities"])

    def against_original(s: dict) -> str:
        db = s.get("same_input_db", s.get("same_draws_db", "-"))
        return "=" if db is None else str(db)

    def difference(metric: str, digits: int):
        return lambda s: f"{s[metric]['ours'] - s[metric]['original']:+.{digits}f}"

    lines = ["| corruption | follows the original | ours vs the original, same input or draws (dB) | "
             "PSNR to clean, ours − original (dB) | SSIM to clean, ours − original |", "|---|---|---|---|---|"]
    from lure.corruptions import FOLLOWS  # what the code says now; the bench recorded its kind then

    for row in r["rows"]:
        kind, how = FOLLOWS[row["corruption"]]
        if kind != row["follows"]:
            raise LureError(f"bench/results/corruptions-*.json measured {row['corruption']} as {row['follows']}, "
                            f"lure/corruptions.py says {kind}: run bench/corruptions.py again")
        follows = kind + (f": {how}" if how else "")
        lines.append(f"| {row['corruption']} | {follows} | {severities(row, against_original)} | "
                     f"{severities(row, difference('to_clean_db', 2))} | "
                     f"{severities(row, difference('ssim_to_clean', 3))} |")
    versions = ", ".join(v if v.startswith(k) else f"{k} {v}" for k, v in r["versions"].items())
    photos = r["frost_photos"]
    return lines, (f"{r['images']} CIFAR-10 test images, severities 1 / 2 / 3 / 4 / 5; '=' every byte equal, '-' "
                   f"random draws not replayed; frost photographs: {photos['equal']:.0%} of bytes equal to "
                   f"OpenCV's, at most {photos['max_abs']}/255 apart; "
                   f"{r['machine']}; {versions}; commit {r['commit'][:10]}")


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
