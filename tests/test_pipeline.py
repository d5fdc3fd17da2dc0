"""The DVC pipeline end to end on a tiny config, in a temporary git repository: the caching a
user relies on (nothing re-runs twice; a new chunk, one method's change or a new run seed re-runs
only what it must), and several machines sharing one DVC remote and one Git remote."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lure import paths
from tests.conftest import ROOT, run_stage

METHODS = ("warm", "lure")  # two of params.yaml's: what a method's own change re-runs needs no more


def project_files() -> list[str]:
    """The project as a fresh clone has it: committed and new source files, no pipeline outputs."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split()
    outputs = ("data/prepared/", "models/", "metrics/", "tests/", "bench/")
    return [f for f in listed if not f.startswith(outputs) and not f.endswith("dvc.lock") and (ROOT / f).is_file()]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    for name in project_files():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, root / name)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["data"]["chunk_size"] = 150
    params["chunks"] = [{"k": 2, "prev": 1}]
    params["methods"] = {m: params["methods"][m] for m in METHODS}
    params["model"]["width"] = 8
    params["train"].update(epochs=4, batch_size=16, lr_milestones=[3], device="cpu")
    params["robustness"].update(corruptions="standard", test_images=60)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    lure(root, "pipelines")  # params.yaml's methods changed: their pipeline files, as a user makes them
    git(root, "init", "-q")
    commit(root, "tiny project")
    return root


def env() -> dict:
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin", "DVC_NO_ANALYTICS": "1",
            "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def git(root, *args):
    return subprocess.run(["git", *args], cwd=root, env=env(), check=True, capture_output=True, text=True).stdout


def commit(root, message):
    git(root, "add", "-A")
    git(root, "commit", "-qm", message)


def dvc(root, *args) -> str:
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, env=env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def lure(root, *args) -> str:
    result = run_stage("lure.cli", *args, cwd=root)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def clone(shared: Path, name: str, rev: str = "main") -> Path:
    """Another machine's fresh clone of the shared Git remote, at `rev`."""
    git(shared.parent, "clone", "-q", "-b", "main", str(shared / "origin.git"), name)
    git(shared.parent / name, "checkout", "-q", rev)
    return shared.parent / name


def output_files(root: Path) -> dict[str, bytes]:
    """The pipeline's outputs (models, metrics), by path: what a machine has of the results (wall
    times apart: neither git nor DVC carries them)."""
    return {str(f.relative_to(root)): f.read_bytes() for folder in ("models", "metrics") for f in (root / folder).rglob("*")
            if f.is_file() and f.name not in (".gitignore", "timing.json")}


def ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def relearn(method, index, seed=0):
    return f"pipelines/{method}/dvc.yaml:relearn@{seed}-chunk{index}"


def of_method(method, stage, seed=0):
    return f"pipelines/{method}/dvc.yaml:{stage}@{seed}"


def per_run(stage, seed=0):
    return {of_method(m, stage, seed) for m in METHODS}


def test_pipeline_caching(project):
    # 1. A first run runs every stage; the first chunk is learned once for all methods.
    first = dvc(project, "repro")
    assert ran(first) == {"prepare", "learn@0", "corrupt", "report", *per_run("branch"),
                          *(relearn(m, 0) for m in METHODS), *per_run("evaluate")}
    assert len(ran(first)) == paths.stage_count(methods=len(METHODS), seeds=1, later_chunks=1)
    summary = json.loads((project / "metrics/summary.json").read_text())
    assert set(summary) == set(METHODS)
    for row in summary.values():
        assert 0.5 < row["final_acc"] <= 1 and row["cer"] >= 0 and row["updates"] > 0  # chance: 0.1
        assert row["seeds"] == 1 and not any(key.endswith("_std") for key in row)  # one seed: no spread
    assert json.loads((project / "metrics/relearn/seed_0/lure/chunk_2.json").read_text())["reset_fraction"] > 0.1
    timing = json.loads((project / "metrics/timing.json").read_text())
    assert set(timing) == set(METHODS) and all(row["wall_s"] > 0 for row in timing.values())
    commit(project, "first run")

    # 2. A second run re-runs nothing.
    again = dvc(project, "repro")
    assert ran(again) == set() and "Data and pipelines are up to date" in again
    assert "up to date" in dvc(project, "status")

    # 3. Same seed, same device: re-running a stage gives the same metrics and model bytes (the
    #    timings apart, in the stage's log and out of its hash), so dvc.lock stays as it was and the
    #    evaluation does not run again.
    metrics_bytes = (project / "metrics/relearn/seed_0/lure/chunk_2.json").read_bytes()
    model_bytes = (project / "models/seed_0/lure/chunk_2.pt").read_bytes()
    subprocess.run([sys.executable, "-m", "stages.relearn", "lure", "2", "--seed", "0"], cwd=project, env=env(),
                   check=True, capture_output=True)
    assert (project / "metrics/relearn/seed_0/lure/chunk_2.json").read_bytes() == metrics_bytes
    assert (project / "models/seed_0/lure/chunk_2.pt").read_bytes() == model_bytes
    assert not {"train_s", "forget_s", "wall_s"} & set(json.loads(metrics_bytes))
    timing = json.loads((project / "metrics/stream/seed_0/lure/chunk_2/timing.json").read_text())
    assert set(timing) == {"forget_s", "train_s"} and timing["train_s"] > 0
    assert "up to date" in dvc(project, "status")
    assert not per_run("evaluate") & ran(dvc(project, "repro"))
    assert git(project, "status", "--porcelain") == ""  # no tracked file looks changed, dvc.lock included

    # 4. A new chunk re-runs only its stages, evaluation and the report (prepare re-cuts the data,
    #    leaving chunks 1..2 byte-identical).
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["chunks"].append({"k": 3, "prev": 2})
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    grown = dvc(project, "repro")
    assert ran(grown) == {"prepare", "report", *(relearn(m, 1) for m in METHODS), *per_run("evaluate")}
    commit(project, "chunk 3 arrived")

    # 5. An experiment on one method's params re-runs only that method's stages.
    experiment = dvc(project, "exp", "run", "-S", "methods.lure.fraction=0.5")
    assert ran(experiment) == {relearn("lure", 0), relearn("lure", 1), of_method("lure", "evaluate"), "report"}
    diff = dvc(project, "metrics", "diff")
    assert "metrics/evaluate/seed_0/lure.json" in diff
    assert "metrics/evaluate/seed_0/warm.json" not in diff
    assert json.loads((project / "metrics/relearn/seed_0/lure/chunk_3.json").read_text())["reset_fraction"] > 0.4

    # 6. A method added on the command line has no pipeline file yet, so none of its stages runs:
    #    the report says what to run instead of leaving it out. `lure pipelines` writes its file,
    #    and only its stages and the report run; taken off again, its file goes with its outputs.
    failed = subprocess.run([sys.executable, "-m", "dvc", "exp", "run", "-S", "+methods.scratch={}"], cwd=project,
                            env=env(), capture_output=True, text=True)
    assert failed.returncode != 0
    assert "methods.scratch has no pipeline file (pipelines/scratch/dvc.yaml)" in failed.stdout + failed.stderr
    assert "uv run lure pipelines" in failed.stdout + failed.stderr
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert params["methods"]["scratch"] == {}  # DVC left the experiment's params in the workspace
    assert "wrote pipelines/scratch/dvc.yaml" in lure(project, "pipelines")
    added = dvc(project, "repro")
    assert ran(added) == {of_method("scratch", "branch"), relearn("scratch", 0), relearn("scratch", 1),
                          of_method("scratch", "evaluate"), "report"}
    assert set(json.loads((project / "metrics/summary.json").read_text())) == {*METHODS, "scratch"}
    del params["methods"]["scratch"]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    removed = lure(project, "pipelines")
    assert "removed pipelines/scratch/dvc.yaml" in removed and "removed models/seed_0/scratch" in removed
    assert not (project / "pipelines" / "scratch").exists()
    assert not list(project.glob("models/seed_*/scratch")) and not list(project.glob("metrics/*/seed_*/scratch*"))
    assert ran(dvc(project, "repro")) == {"report"}

    # 7. The plots: accuracy vs chunk with one line per method, and the others.
    plots = json.loads(dvc(project, "plots", "show", "--json"))["data"]
    assert set(plots) == {"accuracy_vs_chunk", "accuracy_vs_updates", "corruption_accuracy_by_severity",
                          "stability_gap", "reliability"}
    [plot] = plots["accuracy_vs_chunk"]
    values = plot["content"]["data"]["values"]
    assert {v["method"] for v in values} == set(METHODS)
    assert {int(v["chunk"]) for v in values} == {1, 2, 3}
    assert plot["content"]["encoding"]["color"]["field"] == "method"
    summary = json.loads((project / "metrics/summary.json").read_text())
    assert all(0 < row["mca"] <= 1 and row["rel_robustness"] > 0 for row in summary.values())
    assert all(0 <= row["never_recovered"] <= 2 and "gap_depth" in row for row in summary.values())
    stream = (project / "metrics/stream/seed_0/lure/chunk_3/plots/metrics/old_acc.tsv").read_text().splitlines()
    assert stream[0] == "step\told_acc" and [int(r.split("\t")[0]) for r in stream[1:4]] == [0, 0, 10]
    [plot] = plots["reliability"]
    assert {v["method"] for v in plot["content"]["layer"][1]["data"]["values"]} == set(METHODS)

    # 8. A chunk taken off params.yaml leaves nothing behind: the evaluations remove its outputs, and
    #    the pipeline is up to date afterwards.
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["chunks"] = params["chunks"][:1]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shrunk = dvc(project, "repro")
    assert per_run("evaluate") <= ran(shrunk)
    assert not list(project.glob("models/seed_*/*/chunk_3.pt"))
    assert not list(project.glob("metrics/*/seed_*/*/chunk_3*"))
    assert "up to date" in dvc(project, "status")
    commit(project, "chunk 3 taken off")

    # 9. Several machines, one DVC remote and one Git remote (a directory and a bare repository: DVC's
    #    push, run-cache and pull, as with S3 or SSH). A pushes; a fresh clone B pulls, runs nothing,
    #    and has A's results.
    shared = project.parent / "shared"
    git(project.parent, "init", "-q", "--bare", str(shared / "origin.git"))
    dvc(project, "remote", "add", "-d", "shared", str(shared / "dvc"))
    commit(project, "a shared remote")
    git(project, "push", "-q", str(shared / "origin.git"), "HEAD:refs/heads/main")
    dvc(project, "push", "--run-cache")
    b = clone(shared, "b")
    dvc(b, "pull")
    assert ran(dvc(b, "repro")) == set()
    assert output_files(b) == output_files(project)
    assert "metrics/evaluate/seed_0/lure.json" in dvc(b, "metrics", "show")  # pulled, not in git
    assert dvc(b, "metrics", "diff").strip() == ""  # against A's commit, read from the pulled cache

    # 10. B runs a second run seed: only that seed's stages and the report; the summary gains the spread.
    params = yaml.safe_load((b / "params.yaml").read_text())
    params["seeds"] = [0, 1]
    (b / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    seeded = dvc(b, "repro")
    assert ran(seeded) == {"learn@1", "report", *per_run("branch", 1), *per_run("evaluate", 1),
                           *(relearn(m, 0, 1) for m in METHODS)}
    summary = json.loads((b / "metrics/summary.json").read_text())
    for method, row in summary.items():
        assert row["seeds"] == 2 and row["final_acc_std"] >= 0
        runs = [json.loads((b / f"metrics/evaluate/seed_{s}/{method}.json").read_text())["final"] for s in (0, 1)]
        assert row["final_acc"] == pytest.approx((runs[0]["final_acc"] + runs[1]["final_acc"]) / 2)
    # The run seed changes the training (initial weights), not the data: the seeds' models differ.
    assert (b / "models/seed_1/init.pt").read_bytes() != (b / "models/seed_0/init.pt").read_bytes()
    # seed 0's stages came from A's cache without their wall times (A's, not B's): none is averaged
    assert json.loads((b / "metrics/timing.json").read_text()) == {}
    commit(b, "seed 1")
    git(b, "push", "-q", "origin", "HEAD:main")
    dvc(b, "push", "--run-cache")

    # 11. A third machine splits the grid by params: at A's commit (seed 0) it asks for seeds [0, 1];
    #    `--pull` restores seed 1's stages from the run-cache that B pushed; only the report runs.
    c = clone(shared, "c", rev="HEAD~1")
    assert ran(dvc(c, "exp", "run", "--pull", "-S", "seeds=[0,1]")) == {"report"}
    assert (c / "models/seed_1/lure/chunk_2.pt").read_bytes() == (b / "models/seed_1/lure/chunk_2.pt").read_bytes()
    assert (c / "metrics/summary.json").read_bytes() == (b / "metrics/summary.json").read_bytes()

    # 12. A pulls B's commit and gets B's stages without running them.
    git(project, "pull", "-q", str(shared / "origin.git"), "main")
    dvc(project, "pull")
    assert ran(dvc(project, "repro")) == set() and "up to date" in dvc(project, "status")
    assert output_files(project) == output_files(b)


def test_plots_render_offline(project):
    """`dvc plots show` renders with no internet: every chart is drawn in headless Chromium."""
    plots = json.loads(dvc(project, "plots", "show", "--json"))["data"]
    dvc(project, "plots", "show")
    page = (project / "dvc_plots" / "index.html").read_text()
    assert "cdn.jsdelivr" not in page and "https://" not in page.split("<script>")[0]
    dom = render_in_chromium(project / "dvc_plots" / "index.html")
    sizes = re.findall(r'<canvas[^>]*width="(\d+)"[^>]*height="(\d+)"', dom)
    assert len(sizes) == len(plots) and all(int(w) > 200 and int(h) > 200 for w, h in sizes), sizes


def render_in_chromium(page: Path) -> str:
    """The page's DOM after its scripts ran, in headless Chromium with the network closed."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (Debian package chromium; .ci/run installs it)")
    result = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--proxy-server=127.0.0.1:9", f"--user-data-dir={page.parent / 'chromium-profile'}",
         "--virtual-time-budget=15000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    return result.stdout
