"""Each method's pipeline file, pipelines/<method>/dvc.yaml, written from params.yaml's `methods`
and the template pipelines/method.yaml (`uv run lure pipelines`).

DVC keeps one dvc.lock per pipeline file and reads and writes it whole after every stage, so one
file of every stage costs time that grows with the square of the study; a file per method keeps
each lock to one method's stages. DVC cannot make pipeline files from params, hence this step: the
seeds and chunks stay in params.yaml (each method's file reads them there), so only a new or
removed method needs it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from lure import paths
from lure.config import PARAMS_FILE
from lure.errors import LureError

MARK = "# Written by `uv run lure pipelines`"  # what makes a pipeline file ours to rewrite or remove
# Not in lure.paths, which every stage depends on: the pipeline files are not a stage's inputs or outputs.
PIPELINES = Path("pipelines")
METHOD_TEMPLATE = PIPELINES / "method.yaml"


def method_pipeline(method: str) -> Path:
    """The pipeline file of one method's stages, beside its own dvc.lock."""
    return PIPELINES / method / "dvc.yaml"


def method_outputs(method: str) -> list[Path]:
    """Every output of a method's stages that is there, for any run seed (a method taken off)."""
    seed_folders = [paths.MODELS, paths.METRICS / "relearn", paths.METRICS / "stream", paths.EVALUATIONS]
    seeds = sorted({int(d.name[5:]) for folder in seed_folders for d in folder.glob("seed_*") if d.name[5:].isdigit()})
    candidates = [path for seed in seeds for path in (
        paths.method_models(method, seed), paths.method_relearn_metrics(method, seed),
        paths.curves_log(method, seed, 1).parent, paths.evaluation(method, seed), paths.reliability_bins(method, seed))]
    return [path for path in candidates if path.exists()]


def forget_ignored(outputs: list[Path]) -> None:
    """Take removed outputs off the .gitignore files that DVC wrote beside them (as `dvc remove` does)."""
    for output in outputs:
        ignore = output.parent / ".gitignore"
        if ignore.is_file():
            lines = ignore.read_text().splitlines(keepends=True)
            kept = [line for line in lines if line.strip() != f"/{output.name}"]
            if kept != lines:
                ignore.write_text("".join(kept))


def pipeline_text(method: str, template: str) -> str:
    """Method `method`'s pipeline file: the template's stages, with the method's name and the
    project's params.yaml (two folders up) in its vars."""
    if "\nstages:\n" not in template:
        raise LureError(f"{METHOD_TEMPLATE}: no `stages:` section")
    stages = template[template.index("\nstages:\n") + 1:]
    return (f"{MARK} from {METHOD_TEMPLATE} for methods.{method} of {PARAMS_FILE}:\n"
            f"# edit those, not this file.\n"
            f"vars:\n  - ../../{PARAMS_FILE}\n  - method: {json.dumps(method)}\n{stages}")


def read_template() -> str:
    if not METHOD_TEMPLATE.is_file():
        raise LureError(f"{METHOD_TEMPLATE} is missing: run lure from the project's root")
    return METHOD_TEMPLATE.read_text()


def is_method_name(name: str) -> bool:
    """What lure.config accepts as a method's name (letters, digits, _): a folder named otherwise
    under pipelines/ is no method's, and its name never reaches the outputs' paths."""
    return name.replace("_", "").isalnum()


def written_by_us() -> dict[str, Path]:
    """The pipeline files this command wrote, by method."""
    return {file.parent.name: file for file in sorted(PIPELINES.glob("*/dvc.yaml"))
            if is_method_name(file.parent.name) and file.read_text().startswith(MARK)}


def not_ours(file: Path) -> bool:
    return file.is_file() and not file.read_text().startswith(MARK)


def out_of_date(methods: list[str]) -> list[str]:
    """What differs between the pipeline files and what `methods` and the template make, one line each."""
    template = read_template()
    present = written_by_us()
    problems = []
    for method in methods:
        file = method_pipeline(method)
        if not file.is_file():
            problems.append(f"{file} is missing (methods.{method})")
        elif not_ours(file):
            problems.append(f"{file} was not written by lure pipelines (move it away)")
        elif file.read_text() != pipeline_text(method, template):
            problems.append(f"{file} differs from what {METHOD_TEMPLATE} makes")
    problems += [f"{file}: {PARAMS_FILE} has no methods.{method}" for method, file in present.items()
                 if method not in methods]
    return problems


def require_current(methods: list[str]) -> None:
    """Stop, naming every stale file, unless the pipeline files are what `methods` and the template make."""
    stale = out_of_date(methods)
    if stale:
        raise LureError(f"{'; '.join(stale)}: run `uv run lure pipelines`")


def write_pipelines(methods: list[str]) -> tuple[list[Path], list[Path]]:
    """Write each method's pipeline file where it differs; remove those of methods gone, with
    their dvc.lock and their stages' outputs, which nothing would update or remove any more (DVC's
    cache keeps them, wall times apart: a method put back is restored from the run-cache). Returns
    (written, removed)."""
    template = read_template()
    foreign = [str(method_pipeline(m)) for m in methods if not_ours(method_pipeline(m))]
    if foreign:
        raise LureError(f"{', '.join(foreign)}: not written by lure pipelines, which would replace it: move it away")
    written = []
    for method in methods:
        file, text = method_pipeline(method), pipeline_text(method, template)
        if not file.is_file() or file.read_text() != text:
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_text(text)
            written.append(file)
    removed = []
    for method, file in written_by_us().items():
        if method not in methods:
            for gone in (file, file.with_name("dvc.lock")):
                if gone.exists():
                    gone.unlink()
                    removed.append(gone)
            if not any(file.parent.iterdir()):
                file.parent.rmdir()
            outputs = method_outputs(method)
            for output in outputs:
                shutil.rmtree(output) if output.is_dir() else output.unlink()
                removed.append(output)
            forget_ignored(outputs)
    return written, removed
