"""The device check (bench/gpu/check.py) on the CPU with tiny sizes, so that it cannot rot between
the times a GPU is lent: pack to a temporary folder, then every part of the run."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

CHECK = ["bench/gpu/check.py"]


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


def test_every_part_of_the_run_completes_on_the_cpu(tmp_path):
    assert check("pack", "--out", str(tmp_path / "pack"), "--synthetic", "--train-images", "200",
                 "--test-images", "50", "--no-wheels").returncode == 0
    ran = check("run", "--pack", str(tmp_path / "pack"), "--out", str(tmp_path / "out"),
                "--work", str(tmp_path / "work"), "--device", "cpu", "--tiny")
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["device"].startswith("cpu") and results["torch"] and results["pack"]["data"] == "synthetic"
    parts = results["parts"]
    assert parts["tests"]["rc"] == 0
    assert "passed" in parts["tests"]["summary"] and " failed" not in parts["tests"]["summary"]
    assert [r["model"] for r in parts["throughput"]["rows"]["deterministic"]] == ["small_cnn"]
    assert parts["throughput"]["rows"]["deterministic"][0]["speedup"] > 0  # against the baseline loop
    assert "benchmark" in parts["throughput"]["rows"]
    assert parts["repro"]["rc"] == 0 and not parts["repro"]["timed_out"]
    assert {"prepare", "learn@0", "corrupt", "relearn@lure-0-chunk0", "evaluate@warm-0", "report"} <= \
        set(parts["repro"]["stages"])
    assert set(parts["repro"]["summary"]) == {"warm", "lure"} and "mca" in parts["repro"]["summary"]["lure"]
    assert parts["determinism"]["model_identical"] and parts["determinism"]["metrics_identical"]
    projection = parts["projection"]
    assert projection["made"] and set(projection["minutes"]) == {"learn", "warm", "scratch", "lure"}
    # the paper: chunks of 6250 (5625 for training), 50 epochs, full replay: chunk k trains on k chunks
    assert projection["train_images"] == {"learn": 5625 * 50, **{m: 5625 * 50 * sum(range(2, 9))
                                                                  for m in ("warm", "scratch", "lure")}}
    assert projection["evaluated_images"]["lure"] > 625 * 50 * sum(range(2, 9))  # validation, probes and more
    assert projection["minutes_warm_scratch_lure"] == pytest.approx(sum(projection["minutes"].values()))
    assert results["image_versions"]["numpy"]  # what the image (here: this environment) holds
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_file()) == \
        ["repro.log", "results.json", "tests.log", "throughput.log"]  # what comes back from a device call
