"""The device check (bench/gpu/check.py) on the CPU with tiny sizes, so that it cannot rot between
the times a GPU is lent: pack to a temporary folder, then every part of the run, in the order and
within the time the GPU run will have; a run stopped at a limit keeps the parts that finished, and
the rerun runs only the others; collect turns what came back into the committed result."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

CHECK = ["bench/gpu/check.py"]
PARTS = ["machine", "throughput", "tests", "determinism", "sharing", "pipeline", "compiled"]


def check(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *CHECK, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_pack_lists_what_the_gpu_machine_lacks_and_refuses_more_than_a_call_carries(tmp_path):
    packed = check("pack", "--out", str(tmp_path / "pack"), "--synthetic", "--train-images", "200",
                   "--test-images", "50", "--no-wheels")
    assert packed.returncode == 0, packed.stderr
    assert "MiB of 64" in packed.stdout
    manifest = json.loads((tmp_path / "pack" / "manifest.json").read_text())
    carried = {line.split("==")[0] for line in manifest["carried"]}
    assert {"pydantic", "pydantic-core", "dvc", "dvclive", "pygit2"} <= carried  # not in the image
    from_image = {line.split("==")[0] for line in manifest["from_image"]}
    assert {"torch", "torchvision", "numpy", "scikit-learn", "typer"} <= from_image
    assert not any(name.startswith(("nvidia-", "torch")) for name in carried)
    too_big = check("pack", "--out", str(tmp_path / "big"), "--synthetic", "--train-images", "25000", "--no-wheels")
    assert too_big.returncode != 0 and "over the 64 MiB" in too_big.stderr


def test_the_parts_limits_and_the_install_fit_in_six_minutes_and_each_states_its_estimate():
    sys.path.insert(0, str(ROOT / "bench" / "gpu"))
    try:
        import check as gpu_check
    finally:
        sys.path.pop(0)
    assert [p.name for p in gpu_check.PARTS] == PARTS  # the order of what the figures are worth
    budget = gpu_check.INSTALL_LIMIT_S + gpu_check.SETUP_ALLOWANCE_S + gpu_check.MARGIN_S
    assert budget + sum(p.limit_s for p in gpu_check.PARTS) <= gpu_check.TOTAL_LIMIT_S == 360
    assert all(" s" in p.estimate for p in gpu_check.PARTS) and " s " in gpu_check.INSTALL_ESTIMATE
    install = (ROOT / "bench" / "gpu" / "check.sh").read_text()
    assert f"timeout {gpu_check.INSTALL_LIMIT_S}" in install


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """The whole run on the CPU with tiny sizes: what a GPU call would bring back."""
    tmp = tmp_path_factory.mktemp("check")
    assert check("pack", "--out", str(tmp / "pack"), "--synthetic", "--train-images", "200",
                 "--test-images", "50", "--no-wheels").returncode == 0
    ran = check("run", "--pack", str(tmp / "pack"), "--out", str(tmp / "out"), "--work", str(tmp / "work"),
                "--device", "cpu", "--tiny")
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
    return tmp


def part(folder, name: str) -> dict:
    return json.loads((folder / f"{name}.json").read_text())


def test_every_part_runs_on_the_cpu_and_writes_its_own_file(dry_run):
    out = dry_run / "out"
    assert sorted(p.name for p in out.iterdir()) == sorted(["check.log", *(f"{p}.json" for p in PARTS)])
    assert len(list(out.iterdir())) <= 8  # what a device call brings back
    assert all(part(out, name)["ok"] for name in PARTS), {n: part(out, n) for n in PARTS if not part(out, n)["ok"]}
    machine = part(out, "machine")
    assert machine["torch"] and machine["pip_list"]["numpy"] and machine["pack"]["data"] == "synthetic"
    # the manifest as pack wrote it, at this commit, and every part's commit is its commit
    manifest = json.loads((dry_run / "pack" / "manifest.json").read_text())
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert machine["pack"] == manifest and len(manifest["commit"]) == 40 and manifest["commit"] == head
    assert {part(out, name)["commit"] for name in PARTS} == {head}
    assert machine["gpu"] is None and machine["cpu"]
    throughput = part(out, "throughput")
    assert [r["model"] for r in throughput["rows"]["deterministic"]] == ["small_cnn", "small_cnn"]
    assert all(r["speedup"] > 0 for r in throughput["rows"]["deterministic"])  # against the baseline loop
    assert "benchmark" in throughput["rows"]
    # the baseline's loader as on the GPU: worker processes and pinned memory
    assert throughput["baseline"] == {"baseline_workers": 2, "baseline_pin_memory": True}
    tests = part(out, "tests")
    assert "passed" in tests["summary"] and " failed" not in tests["summary"] and tests["failed"] == []
    determinism = part(out, "determinism")
    assert determinism["identical"] and determinism["runs"][0]["updates"] == 2
    pipeline = part(out, "pipeline")
    assert {"prepare", "learn@0", "corrupt", "pipelines/lure/dvc.yaml:relearn@0-chunk0",
            "pipelines/warm/dvc.yaml:evaluate@0", "report"} <= set(pipeline["stages"])
    assert set(pipeline["summary"]) == {"warm", "scratch", "lure"} and "mca" in pipeline["summary"]["lure"]
    sharing = part(out, "sharing")
    assert sharing["alone_img_s"] > 0 and len(sharing["together_img_s"]) == 2 and sharing["together_over_alone"] > 0
    compiled = part(out, "compiled")
    assert compiled["rows"][0]["train_img_s"] > 0
    log = (out / "check.log").read_text()
    assert [line.split()[1] for line in log.splitlines() if line.startswith("== ") and "limit" in line] == PARTS


def test_a_run_stopped_at_its_limit_keeps_the_parts_that_finished_and_the_rerun_runs_the_rest(dry_run, tmp_path):
    """Killed as the device call kills a command at its limit (its whole process group) while the
    tests part's pytest runs: machine.json is there and whole, nothing of the tests, and no process
    of the check is left; the rerun, on a fresh machine (an empty scratch folder), runs the tests
    and the machine's record again."""
    import os
    import re
    import signal
    import time

    stopped = tmp_path / "stopped"
    command = [sys.executable, *CHECK, "run", "--pack", str(dry_run / "pack"), "--out", str(stopped), "--work",
               str(tmp_path / "work"), "--device", "cpu", "--tiny", "--parts", "machine,tests"]
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, start_new_session=True) as run:
        log, child = stopped / "check.log", None
        while child is None and run.poll() is None:
            time.sleep(0.2)
            text = log.read_text() if log.is_file() else ""
            child = next((int(m[1]) for m in re.finditer(r"\$ \[pid (\d+)\] \S+ -m pytest", text)), None)
        assert child is not None, "the tests part never started"
        time.sleep(1)  # pytest well under way
        os.killpg(run.pid, signal.SIGKILL)
    time.sleep(0.5)
    state = f"/proc/{child}/stat"
    alive = os.path.exists(state) and open(state).read().rsplit(")", 1)[1].split()[0] != "Z"  # Z: dead, unreaped
    assert not alive, "the tests part's pytest outlived the check"
    assert sorted(p.name for p in stopped.iterdir()) == ["check.log", "machine.json"]
    assert part(stopped, "machine")["ok"]
    assert check("failed", str(stopped)).stdout.strip() == ",".join(PARTS[1:])
    again = tmp_path / "again"
    rerun = check("run", "--pack", str(dry_run / "pack"), "--out", str(again), "--work", str(tmp_path / "fresh"),
                  "--device", "cpu", "--tiny", "--rerun-from", str(stopped), "--parts", "machine,tests")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert sorted(p.name for p in again.glob("*.json")) == ["machine.json", "tests.json"]
    assert part(again, "tests")["ok"]
    merged = check("collect", str(stopped), str(again), "--out", str(tmp_path / "merged.json"))
    assert merged.returncode == 0, merged.stderr
    result = json.loads((tmp_path / "merged.json").read_text())
    assert "passed" in result["parts"]["tests"]["summary"]
    assert result["not_run"] == ["throughput", "determinism", "sharing", "pipeline", "compiled"]


def test_collect_makes_the_committed_result_with_the_figures_against_the_targets(dry_run, tmp_path):
    collected = check("collect", str(dry_run / "out"), "--out", str(tmp_path / "gpucheck-cpu.json"))
    assert collected.returncode == 0, collected.stderr
    result = json.loads((tmp_path / "gpucheck-cpu.json").read_text())
    assert result["device"].startswith("cpu") and result["versions"]["torch"] and result["not_run"] == []
    assert set(result["figures"]) >= {"train_img_s_batch512", "train_img_s_batch64", "eval_img_s"}
    assert result["projection"] == {"made": False, "why": "no ResNet-18 batch-64 throughput measured"}
    assert "pip_list" not in result["parts"]["machine"]
    assert check("collect", str(tmp_path)).returncode != 0  # no machine.json: not a check's output


def test_the_readme_table_of_a_collected_run_says_each_figure_against_its_target(dry_run, tmp_path, monkeypatch):
    (tmp_path / "bench" / "results").mkdir(parents=True)
    assert check("collect", str(dry_run / "out"), "--out",
                 str(tmp_path / "bench" / "results" / "gpucheck-cpu.json")).returncode == 0
    from lure.cli import bench_table

    monkeypatch.chdir(tmp_path)
    table = bench_table("gpucheck-cpu")
    assert "| ResNet-18 training at batch 512 (img/s) | not measured | ≥ 30,000 |" in table  # the dry run: no ResNet
    assert "| the same training in two processes | identical weights | identical |" in table
    assert "| `dvc repro` of presets/gpu-check.yaml | 13 stages in " in table
    assert "passed" in table and "(cpu x" in table
