"""Every forgetting method through the real stages (prepare, learn, branch, relearn) on a new
chunk of digits, in process: what each records, and what continual backprop carries over to the
chunk after."""

import json
import subprocess
import sys

import pytest
import torch
import yaml

from lure import paths
from lure.methods import METHODS
from lure.stability import read_curve
from tests.conftest import ROOT, run_stage

TINY = {
    "data": {"source": "digits", "chunk_size": 120},
    "chunks": [{"k": 2, "prev": 1}, {"k": 3, "prev": 2}],
    "model": {"width": 4},
    "train": {"device": "cpu", "epochs": 2, "batch_size": 16, "lr_milestones": [2]},
    "stability": {"every": 5, "samples": 20},
    "robustness": {"corruptions": "none"},
}
CHUNK_2_UPDATES = 28  # 2 epochs of 216 images (chunks 1 and 2) in batches of 16
# Settings that make each method act within a tiny run; continual backprop's units come of age
# only after chunk 2, so it can replace units in chunk 3 only if it carried their ages over.
SETTINGS = {"continual_backprop": {"maturity": CHUNK_2_UPDATES, "replacement_rate": 0.1}, "redo": {"tau": 0.5},
            "later_layers": {"from_layer": "layer2"}}


# every mitigation at once, on a method that resets the head
SGM = {"kind": "scratch", "mitigate": {"head_init": "class_means", "soft_targets": True, "fresh_optimizer": True,
                                       "warmup": 0.3}}


def run_methods(root, params: dict, later: tuple[tuple[str, int], ...] = ()) -> dict:
    """The real stages in process in `root`: prepare, learn, then every method's branch and relearn
    of chunk 2, then the (method, chunk) relearns of `later`; each method's chunk-2 metrics."""
    from stages import branch, learn, prepare, relearn

    (root / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        prepare.main()
        learn.main(seed=0)
        for method in params["methods"]:
            branch.main(method, seed=0)
            relearn.main(method, 2, seed=0)
        for method, k in later:
            relearn.main(method, k, seed=0)
    return {m: json.loads((root / f"metrics/relearn/seed_0/{m}/chunk_2.json").read_text()) for m in params["methods"]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Each method's relearn metrics for chunk 2 (and 3 for continual backprop), and the run directory."""
    root = tmp_path_factory.mktemp("methods")
    params = {**TINY, "methods": {kind: SETTINGS.get(kind, {}) for kind in METHODS} | {"scratch_sgm": SGM}}
    metrics = {m: {2: chunk_2} for m, chunk_2 in run_methods(root, params, later=(("continual_backprop", 3),)).items()}
    metrics["continual_backprop"][3] = json.loads(
        (root / "metrics/relearn/seed_0/continual_backprop/chunk_3.json").read_text())
    return metrics, root


def test_every_method_records_what_it_reset(runs):
    metrics, _ = runs
    reset = {m: metrics[m][2]["reset_fraction"] for m in metrics}
    assert reset["warm"] == 0.0
    assert metrics["continual_backprop"][2]["updates"] == CHUNK_2_UPDATES
    assert reset["continual_backprop"] == 0.0  # no unit older than its maturity yet
    assert reset["scratch"] == 1.0
    assert reset["shrink_perturb"] == pytest.approx(0.7)  # 1 - shrink
    for m in ("lure", "magnitude", "random_mask"):
        assert 0.15 < reset[m] <= 0.2  # biases compete for the 20 % but are not reset
    assert metrics["head_reset"][2]["reset"] == {"head.weight": 1.0, "head.bias": 1.0}
    assert set(metrics["later_layers"][2]["reset"]) == {"body.1.0.weight", "body.3.0.weight", "head.weight"}
    by_layer = metrics["later_layers"][2]["reset_by_layer"]
    assert by_layer["layer1"] == 0 and 0.9 < by_layer["layer2"] < 1 and 0.9 < by_layer["head"] < 1  # BN, bias kept
    assert metrics["head_reset"][2]["reset_by_layer"] == {"layer1": 0, "layer2": 0, "layer3": 0, "head": 1}
    assert 0.5 < reset["knowledge_evolution"] < 0.9
    assert 0 < reset["redo"] < 1
    assert 0 < reset["dash"] <= 0.7  # 1 - the mean factor, which is at least min_scale 0.3
    assert set(metrics["dash"][2]["reset"]) == {f"{m}.{p}" for m in ("body.0.0", "body.1.0", "body.3.0", "head")
                                                  for p in ("weight",)} | {"head.bias"}
    assert 0 < reset["fire"] <= 1 and set(metrics["fire"][2]["reset"]) == {"body.0.0.weight", "body.1.0.weight",
                                                                              "body.3.0.weight", "head.weight"}
    for m in ("l2_init", "parseval", "hare_tortoise"):  # they act in the loop, resetting nothing
        assert reset[m] == 0.0
    tortoise = metrics["hare_tortoise"][2]["networks_val_acc"]["tortoise"]
    assert 0 <= tortoise <= 1 and tortoise != metrics["hare_tortoise"][2]["val_acc"]
    for m in metrics:
        assert metrics[m][2]["updates"] == CHUNK_2_UPDATES and 0 <= metrics[m][2]["val_acc"] <= 1


def test_the_evaluation_gives_the_tortoises_last_accuracy_beside_the_hares(runs):
    """Hare & Tortoise's claim is about its slow copy: the evaluation's final metrics carry the
    tortoise's test accuracy after the last chunk (tortoise_acc), the one of the chunk-by-chunk list."""
    from stages import corrupt, evaluate, relearn

    _, root = runs
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        relearn.main("hare_tortoise", 3, seed=0)
        corrupt.main()
        evaluate.main("hare_tortoise", seed=0)
    result = json.loads((root / "metrics/evaluate/seed_0/hare_tortoise.json").read_text())
    tortoise = result["chunks"]["chunk_3"]["networks_test_acc"]["tortoise"]
    assert result["final"]["tortoise_acc"] == tortoise != result["final"]["final_acc"]
    assert result["chunks"]["chunk_2"]["networks_test_acc"]["tortoise"] != tortoise


def test_continual_backprop_replaces_units_once_mature_and_carries_its_state(runs):
    metrics, root = runs
    assert metrics["continual_backprop"][3]["reset_fraction"] > 0  # ages carried from chunk 2: mature now
    state = torch.load(root / "models/seed_0/continual_backprop/chunk_3.pt", weights_only=True)["method_state"]
    updates = metrics["continual_backprop"][2]["updates"] + metrics["continual_backprop"][3]["updates"]
    assert all(int(age.max()) <= updates for age in state["age"])
    assert any(int(age.max()) > metrics["continual_backprop"][3]["updates"] for age in state["age"])
    assert "method_state" not in torch.load(root / "models/seed_0/warm/chunk_2.pt", weights_only=True)


def test_every_method_runs_on_the_mlp(tmp_path):
    """The mlp declares its layers and units like the CNNs, so every method forgets on it: ReDo
    and continual backprop recycle its linear units (no BatchNorm)."""
    settings = SETTINGS | {"redo": {"tau": 0.9}, "continual_backprop": {"maturity": 5, "replacement_rate": 0.05}}
    params = {**TINY, "chunks": [{"k": 2, "prev": 1}], "model": {"arch": "mlp", "width": 16, "depth": 2},
              "methods": {kind: settings.get(kind, {}) for kind in METHODS}}
    metrics = run_methods(tmp_path, params)
    assert metrics["warm"]["reset_fraction"] == 0.0 and metrics["scratch"]["reset_fraction"] == 1.0
    in_the_loop = {"warm", "l2_init", "parseval", "hare_tortoise"}  # they reset nothing
    assert all(metrics[m]["reset_fraction"] > 0 for m in metrics if m not in in_the_loop), \
        {m: metrics[m]["reset_fraction"] for m in metrics}
    for m in ("redo", "continual_backprop", "snr"):
        assert {"body.1.weight", "body.3.weight"} & set(metrics[m]["reset"]), metrics[m]["reset"]
    assert set(metrics["later_layers"]["reset"]) >= {"body.3.weight", "head.weight"}


# the stages in a fresh process: importing the tests would pin this process's kernels (conftest)
RUN_IN_A_PROCESS = """
import json, sys
from pathlib import Path
from stages import branch, learn, prepare, relearn
methods = json.loads(sys.argv[1])
prepare.main()
learn.main(seed=0)
for method in methods:
    branch.main(method, seed=0)
    relearn.main(method, 2, seed=0)
print(json.dumps({m: json.loads(Path(f"metrics/relearn/seed_0/{m}/chunk_2.json").read_text()) for m in methods}))
"""


def test_every_method_runs_on_resnet18_with_every_mitigation(tmp_path):
    """ResNet-18 (its shortcuts, its BatchNorm units) under each method, each with every stability-gap
    mitigation on, through the stages: every chunk-2 run trains and records its metrics. In a process
    of its own with fast kernels (every core, oneDNN: ResNet-18 takes minutes with portable ones)."""
    params = {**TINY, "data": {"source": "digits", "chunk_size": 40}, "chunks": [{"k": 2, "prev": 1}],
              "model": {"arch": "resnet18"}, "train": {**TINY["train"], "epochs": 1, "cpu_kernels": "fast"},
              "stability": {"every": 0, "samples": 10},
              "methods": {kind: {**SETTINGS.get(kind, {}), "mitigate": SGM["mitigate"]} for kind in METHODS}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    ran = subprocess.run([sys.executable, "-c", RUN_IN_A_PROCESS, json.dumps(list(params["methods"]))], cwd=tmp_path,
                         capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert ran.returncode == 0, ran.stderr[-3000:]
    metrics = json.loads(ran.stdout.strip().splitlines()[-1])
    assert set(metrics) == set(METHODS)
    for m, chunk_2 in metrics.items():
        assert chunk_2["updates"] > 0 and 0 <= chunk_2["val_acc"] <= 1, m
    assert metrics["scratch"]["reset_fraction"] == 1.0 and metrics["fire"]["reset_fraction"] > 0


def test_an_unknown_layer_name_is_refused_naming_the_key(runs, tmp_path):
    _, root = runs
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["methods"]["later_layers"]["from_layer"] = "layer9"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    for path in ["data", "models"]:
        (tmp_path / path).symlink_to(root / path)
    result = run_stage("stages.relearn", "later_layers", "2", "--seed", "0", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "methods.later_layers.from_layer: 'layer9' is not a layer" in result.stderr
    assert not (tmp_path / "metrics").exists()




def test_mitigations_act_at_the_boundary_and_in_the_loop(runs):
    """scratch with the mitigations: right after the boundary (the second point of the continual
    evaluation) the class-mean head already classifies the new chunk, which plain scratch's random
    head cannot; then the loop's hooks run through the chunk."""
    metrics, root = runs

    plain, sgm = (read_curve(root / paths.curves_log(method, 0, 2), "new") for method in ("scratch", "scratch_sgm"))
    assert plain[1][0] == sgm[1][0] == 0  # after forgetting, before the first update
    assert plain[1][1] < 0.3 < sgm[1][1]  # 10 classes: chance is 0.1
    assert sgm[0] == plain[0]  # before forgetting both are the shared chunk-1 model
    assert metrics["scratch_sgm"][2]["updates"] == CHUNK_2_UPDATES
    assert metrics["scratch_sgm"][2]["reset"] == metrics["scratch"][2]["reset"]
