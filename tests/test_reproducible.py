"""Same seed, same numbers on any x86-64 CPU: with `train.cpu_kernels: portable` (the default
pipeline's), a short run of the default pipeline's stages gives byte-identical models, metrics and
corrupted test sets whatever instruction set torch dispatches to (ATEN_CPU_CAPABILITY), whatever
code path MKL takes (MKL_CBWR, its STRICT mode included), whatever oneDNN may use
(ONEDNN_MAX_CPU_ISA) and with 1 or 2 threads. Each variation is a fresh process, as a stage is on
another machine. With `fast` the same variations change the weights: the check can fail."""

import hashlib
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT

# every value of every variation, spread over few processes (each costs a torch import)
VARIATIONS = {
    "as installed": {},
    "avx2, 1 thread": {"ATEN_CPU_CAPABILITY": "avx2", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    "avx512, MKL AVX2 strict, oneDNN SSE4.1": {"ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AVX2,STRICT",
                                               "ONEDNN_MAX_CPU_ISA": "SSE41", "OMP_NUM_THREADS": "2"},
    "default, MKL AVX-512, oneDNN AVX2, 2 threads": {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "AVX512",
                                                     "ONEDNN_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": "2",
                                                     "MKL_NUM_THREADS": "2"},
}
# the default pipeline's stages for one run seed and LURE's chunk 2, in one process
STAGES = """
from stages import branch, corrupt, evaluate, learn, relearn
learn.main(seed=0)
branch.main("lure", seed=0)
relearn.main("lure", 2, seed=0)
corrupt.main()
evaluate.main("lure", seed=0)
"""


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The default params, shortened (3 epochs, one new chunk, 60 corrupted test images), and the
    prepared data, which has no float arithmetic."""
    root = tmp_path_factory.mktemp("reproducible")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["chunks"] = [{"k": 2, "prev": 1}]
    params["methods"] = {"lure": params["methods"]["lure"]}
    params["train"].update(epochs=3, lr_milestones=[2])
    params["robustness"].update(test_images=60, severities=[1, 5])
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ran = subprocess.run([sys.executable, "-m", "stages.prepare"], cwd=root, capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert ran.returncode == 0, ran.stderr
    return root


def outputs(prepared, tmp_path, env: dict[str, str], cpu_kernels: str) -> dict[str, str]:
    """The stages run in a copy of `prepared` under `env`: each output file's SHA-256."""
    import shutil

    root = tmp_path / "run"
    shutil.copytree(prepared, root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["cpu_kernels"] = cpu_kernels
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ran = subprocess.run([sys.executable, "-c", STAGES], cwd=root, capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", **env})
    assert ran.returncode == 0, ran.stderr[-3000:]
    files = [f for folder in ("models", "metrics", "data/corrupted") for f in (root / folder).rglob("*")
             if f.is_file() and f.name != "timing.json"]  # wall times: apart from the results (.dvcignore)
    return {str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


@pytest.fixture(scope="module")
def reference(prepared, tmp_path_factory) -> dict[str, str]:
    """The portable run as installed."""
    files = outputs(prepared, tmp_path_factory.mktemp("reference"), VARIATIONS["as installed"], "portable")
    assert {"models/seed_0/lure/chunk_2.pt", "metrics/evaluate/seed_0/lure.json"} <= set(files)
    assert any(name.startswith("data/corrupted/") for name in files)
    return files


@pytest.mark.parametrize("variation", list(VARIATIONS)[1:])
def test_portable_results_are_byte_identical_under_every_variation(prepared, reference, tmp_path, variation):
    assert outputs(prepared, tmp_path, VARIATIONS[variation], "portable") == reference


def test_fast_results_change_with_the_instruction_set_and_the_threads(prepared, tmp_path):
    fast = {name: outputs(prepared, tmp_path / name.replace(" ", "_").replace(",", ""), env, "fast")
            for name, env in list(VARIATIONS.items())[:2]}
    model = "models/seed_0/chunk_1.pt"
    assert fast["as installed"][model] != fast["avx2, 1 thread"][model]
