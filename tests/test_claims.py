"""Published claims against kept results: the verdict from the paired 95% interval, and the
README table built from a claims file and kept study folders."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from lure import paths
from lure.errors import LureError
from lure.io import write_json
from tests.conftest import ROOT


@pytest.mark.parametrize("ci95, direction, effect, expected", [
    ([0.01, 0.03], ">", None, "reproduced"),
    ([-0.03, -0.01], "<", None, "reproduced"),  # e.g. a lower ECE, claimed
    ([-0.03, -0.01], ">", None, "opposite"),
    ([0.01, 0.03], "<", None, "opposite"),
    ([0.01, 0.03], ">", 0.045, "reproduced, smaller than published"),  # a published +4.5 points lies above it
    ([0.01, 0.05], ">", 0.045, "reproduced"),
    ([0.0, 0.03], ">", None, "inconclusive"),  # 0 itself is in the interval
    ([-0.01, 0.01], ">", 0.045, "no effect of the published size"),
    ([-0.01, 0.05], ">", 0.045, "inconclusive"),  # ... inside it
    ([-0.01, 0.01], ">", None, "inconclusive"),
    ([-0.002, 0.004], "<", -0.01, "no effect of the published size"),
    (None, ">", None, "one seed: no interval"),
])
def test_verdict_from_the_interval(ci95, direction, effect, expected):
    from lure.claims import verdict

    assert verdict(ci95, direction, effect) == expected


def keep_study(folder, params_dict, accs: dict[str, list[float]]) -> None:
    params_dict["methods"] = {m: {} for m in accs}
    params_dict["seeds"] = list(range(len(next(iter(accs.values())))))
    folder.mkdir(parents=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(params_dict))
    for method, values in accs.items():
        for seed, acc in enumerate(values):
            write_json(paths.evaluation(method, seed, folder / "evaluate"),
                       {"final": {"final_acc": acc, "ece": 0.2 - acc / 10}, "chunks": {}})


def test_claims_table_from_kept_results(in_tmp, params_dict):
    from scipy.stats import ttest_rel

    from lure.claims import claims_table

    warm = [0.40, 0.42, 0.41, 0.43, 0.39]
    scratch = [0.45, 0.46, 0.44, 0.47, 0.45]
    same = [0.41, 0.41, 0.42, 0.42, 0.40]
    keep_study(in_tmp / "results" / "gap", params_dict, {"warm": warm, "scratch": scratch, "lure": same})
    claims = [
        {"claim": "scratch beats warm", "published": "56.2 vs 51.7", "effect": 0.045, "results": "results/gap",
         "method": "scratch", "baseline": "warm", "metric": "final_acc", "direction": ">"},
        {"claim": "lure is better calibrated", "published": "a claim", "results": "results/gap",
         "method": "lure", "baseline": "warm", "metric": "ece", "direction": "<"},
    ]
    (in_tmp / "claims.yaml").write_text(yaml.safe_dump(claims))
    lines = claims_table(in_tmp / "claims.yaml", in_tmp).splitlines()
    low, high = ttest_rel(scratch, warm).confidence_interval(0.95)
    assert lines[2] == (f"| scratch beats warm | 56.2 vs 51.7 | `gap` | scratch − warm, final_acc: "
                        f"{np.mean(np.subtract(scratch, warm)):+.4f} (5 seeds) | [{low:+.4f}, {high:+.4f}] | "
                        f"reproduced |")
    # ece = 0.2 - acc / 10: lure's is lower where its accuracy is higher, not on every seed
    low, high = ttest_rel(np.subtract(0.2, np.divide(same, 10)), np.subtract(0.2, np.divide(warm, 10))) \
        .confidence_interval(0.95)
    assert low < 0 < high and lines[3].endswith(f"| [{low:+.4f}, {high:+.4f}] | inconclusive |")


def test_a_bad_claims_file_is_named_with_its_key(in_tmp):
    from lure.claims import claims_table

    (in_tmp / "claims.yaml").write_text(yaml.safe_dump([{"claim": "x", "published": "y", "results": "r",
                                                          "method": "lure", "baseline": "warm", "metric": "final_acc",
                                                          "direction": "bigger"}]))
    with pytest.raises(LureError, match=r"claims.yaml, claim 1 is invalid:\n.*direction"):
        claims_table(in_tmp / "claims.yaml", in_tmp)
    wrong_sign = yaml.safe_load((in_tmp / "claims.yaml").read_text())
    wrong_sign[0].update(direction="<", effect=0.02)
    (in_tmp / "claims.yaml").write_text(yaml.safe_dump(wrong_sign))
    with pytest.raises(LureError, match="effect 0.02 has the sign opposite to direction '<'"):
        claims_table(in_tmp / "claims.yaml", in_tmp)
    with pytest.raises(LureError, match="no such claims file"):
        claims_table(in_tmp / "missing.yaml", in_tmp)


def test_every_claim_is_tested_by_a_preset_that_runs_its_comparison():
    """Each claim's study is presets/cifar10-<name>.yaml kept in results/<name>: the preset runs
    the claim's method and baseline with at least 3 seeds and measures its metric."""
    from lure.claims import load_claims
    from lure.config import load_params

    for c in load_claims(ROOT / "results" / "claims.yaml"):
        p = load_params(ROOT / (c.preset or Path("presets") / f"cifar10-{c.results.name}.yaml"))
        assert c.results.parent.as_posix() == "results"
        assert {c.method, c.baseline} <= set(p.methods) and len(p.seeds) >= 3, c.claim
        if c.method_metric:  # another network of the method's: one it carries
            assert c.method_metric == "tortoise_acc" and p.kind_of(c.method) == "hare_tortoise", c.claim
        if c.metric in ("mca", "rel_robustness"):
            assert p.robustness.corruptions != "none", c.claim


def test_a_claim_fixed_before_its_study_ran_is_listed_as_not_run_yet(in_tmp):
    from lure.claims import claims_table

    (in_tmp / "claims.yaml").write_text(yaml.safe_dump([
        {"claim": "dash beats scratch", "published": "claimed", "results": "results/later",
         "preset": "presets/cifar10-dash-chunks.yaml", "method": "dash", "baseline": "scratch",
         "metric": "final_acc", "direction": ">"}]))
    assert claims_table(in_tmp / "claims.yaml", in_tmp).splitlines()[2] == (
        "| dash beats scratch | claimed | `later` (presets/cifar10-dash-chunks.yaml) | dash − scratch, final_acc | - | "
        "not run yet |")


def test_another_networks_accuracy_is_paired_with_the_baselines_model(in_tmp, params_dict):
    """Hare & Tortoise's tortoise against warm start: the tortoise's final accuracy minus warm's
    final_acc on the same seed; the methods that carry no tortoise are left out."""
    from scipy.stats import ttest_rel

    from lure.claims import claims_table
    from lure.report import load_kept, paired_differences

    warm, hare, tortoise = [0.40, 0.42, 0.41], [0.39, 0.43, 0.40], [0.44, 0.45, 0.43]
    folder = in_tmp / "results" / "ht"
    keep_study(folder, params_dict, {"warm": warm, "hare_tortoise": hare, "scratch": warm})
    for seed, acc in enumerate(tortoise):
        path = paths.evaluation("hare_tortoise", seed, folder / "evaluate")
        result = json.loads(path.read_text())
        result["final"]["tortoise_acc"] = acc
        write_json(path, result)
    d = paired_differences(load_kept(folder), "warm", "final_acc", "tortoise_acc")
    assert list(d) == ["hare_tortoise"] and d["hare_tortoise"]["n"] == 3
    assert d["hare_tortoise"]["mean"] == pytest.approx(np.mean(np.subtract(tortoise, warm)))
    low, high = ttest_rel(tortoise, warm).confidence_interval(0.95)
    assert d["hare_tortoise"]["ci95"] == pytest.approx([low, high])
    (in_tmp / "claims.yaml").write_text(yaml.safe_dump([
        {"claim": "the tortoise beats warm", "published": "claimed", "results": "results/ht", "method": "hare_tortoise",
         "method_metric": "tortoise_acc", "baseline": "warm", "metric": "final_acc", "direction": ">"}]))
    row = claims_table(in_tmp / "claims.yaml", in_tmp).splitlines()[2]
    assert f"hare_tortoise's tortoise_acc − warm's final_acc: {np.mean(np.subtract(tortoise, warm)):+.4f} (3 seeds)" \
        in row and row.endswith(f"[{low:+.4f}, {high:+.4f}] | reproduced |")
