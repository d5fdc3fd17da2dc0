"""The report over run seeds: mean and sample std per method, no std from one seed, pooled
reliability bins, and seeded stages refusing a seed that params.yaml does not list."""

import shutil
import statistics

import numpy as np
import pytest
import torch
import yaml

from lure import paths
from lure.errors import LureError
from lure.io import write_json, write_text
from lure.metrics import reliability
from lure.report import accuracy_rows, pooled_reliability, read_reliability, report, stability_rows, summary_row, tables
from tests.conftest import ROOT, run_stage


def evaluation(final_acc: float, cer: int, chunk_acc: list[float], updates: int = 100) -> dict:
    """An evaluate stage's output, reduced to what the report reads."""
    chunks = {f"chunk_{k}": {"test_acc": acc, "updates": updates} for k, acc in enumerate(chunk_acc, start=1)}
    return {"final": {"final_acc": final_acc, "cer": cer, "updates": updates * len(chunk_acc)}, "chunks": chunks,
            "robustness": {"by_severity": {"s1": final_acc - 0.1, "s2": final_acc - 0.2}}}


def test_summary_is_the_mean_and_sample_std_over_seeds():
    row = summary_row([{"final_acc": 0.90, "cer": 30, "updates": 1500},
                       {"final_acc": 0.95, "cer": 20, "updates": 1500},
                       {"final_acc": 1.00, "cer": 27, "updates": 1500}])
    assert row["final_acc"] == pytest.approx(0.95) and row["final_acc_std"] == pytest.approx(0.05)
    assert row["cer"] == pytest.approx(77 / 3)
    # ddof = 1: sqrt(((30-m)^2 + (20-m)^2 + (27-m)^2) / 2)
    m = 77 / 3
    assert row["cer_std"] == pytest.approx((((30 - m) ** 2 + (20 - m) ** 2 + (27 - m) ** 2) / 2) ** 0.5)
    assert row["updates"] == 1500 and isinstance(row["updates"], int) and row["updates_std"] == 0.0
    assert row["seeds"] == 3
    assert list(row) == ["final_acc", "final_acc_std", "cer", "cer_std", "updates", "updates_std", "seeds"]


def test_one_seed_gives_its_own_values_and_no_std():
    final = {"final_acc": 0.9861111111111112, "cer": 37, "ece": 0.019459767267107964}
    row = summary_row([final])
    assert row == {**final, "seeds": 1}
    assert [type(v) for v in row.values()] == [float, int, float, int]
    assert not any(key.endswith("_std") for key in row)


def test_accuracy_per_chunk_is_averaged_over_seeds():
    evaluations = {"warm": {0: evaluation(0.9, 30, [0.5, 0.7]), 3: evaluation(1.0, 20, [0.6, 0.9])},
                   "lure": {0: evaluation(0.8, 40, [0.5, 0.8]), 3: evaluation(0.8, 40, [0.6, 0.8])}}
    rows = {(r["method"], r["chunk"]): r for r in accuracy_rows(evaluations)}
    assert rows["warm", 1]["test_acc"] == pytest.approx(0.55)
    assert rows["warm", 2]["test_acc"] == pytest.approx(0.8)
    assert rows["warm", 2]["test_acc_std"] == pytest.approx(statistics.stdev([0.7, 0.9]))
    assert rows["lure", 2]["test_acc_std"] == 0.0
    assert rows["warm", 2]["cum_updates"] == 200
    printed = tables(evaluations)
    assert printed.startswith("mean ± std over 2 run seeds (0, 3)")
    assert f"| warm | 0.9500 ± {statistics.stdev([0.9, 1.0]):.4f} | 25.0 ± 7.1 |" in printed  # a count: one decimal
    assert "| lure | 0.5500 ± 0.0707 | 0.8000 ± 0 |" in printed  # the same in both runs


def test_tables_show_no_spread_for_one_seed():
    printed = tables({"warm": {0: evaluation(0.9, 30, [0.5, 0.7])}})
    assert "±" not in printed and "| warm | 0.9000 | 30 | 200 |" in printed


def write_stream(method: str, seed: int, k: int, data: str, points: list[tuple[int, float]]) -> None:
    log = paths.curves_log(method, seed, k) / "plots" / "metrics" / f"{data}_acc.tsv"
    write_text(log, f"step\t{data}_acc\n" + "".join(f"{step}\t{acc}\n" for step, acc in points))


def test_stability_curves_are_averaged_evaluation_by_evaluation(in_tmp):
    # Step 0 comes twice (before and after forgetting): the two must not be merged.
    write_stream("lure", 0, 2, "old", [(0, 1.0), (0, 0.5), (10, 0.8)])
    write_stream("lure", 1, 2, "old", [(0, 0.9), (0, 0.3), (10, 1.0)])
    write_stream("lure", 0, 2, "new", [(0, 0.0), (0, 0.1), (10, 0.6)])
    write_stream("lure", 1, 2, "new", [(0, 0.2), (0, 0.1), (10, 0.8)])
    runs = {seed: {"chunks": {"chunk_1": {}, "chunk_2": {}}} for seed in (0, 1)}
    rows = [(r["data"], r["step"], r["accuracy"]) for r in stability_rows({"lure": runs})]
    assert rows == [("old", 0, pytest.approx(0.95)), ("old", 0, pytest.approx(0.4)), ("old", 10, pytest.approx(0.9)),
                    ("new", 0, pytest.approx(0.1)), ("new", 0, pytest.approx(0.1)), ("new", 10, pytest.approx(0.7))]


def bins(*rows: tuple[float, float, float, int]) -> list[dict]:
    return [{"bin_centre": c, "confidence": conf, "accuracy": acc, "count": n} for c, conf, acc, n in rows]


def test_reliability_bins_are_pooled_by_count():
    seed_0 = bins((0.7, 0.70, 0.5, 2), (0.9, 0.92, 1.0, 3))
    seed_1 = bins((0.5, 0.52, 1.0, 4), (0.9, 0.88, 0.0, 1))
    pooled = pooled_reliability({"lure": [seed_0, seed_1]})
    # Bin 0.9 by hand: 3 images at mean confidence 0.92, all right; 1 at 0.88, wrong.
    assert pooled == [
        {"method": "lure", "confidence": pytest.approx(0.52), "accuracy": 1.0, "count": 4},
        {"method": "lure", "confidence": pytest.approx(0.70), "accuracy": 0.5, "count": 2},
        {"method": "lure", "confidence": pytest.approx((3 * 0.92 + 0.88) / 4), "accuracy": 0.75, "count": 4},
    ]


def as_rows(b, n_bins: int) -> list[dict]:
    return bins(*[((i + 0.5) / n_bins, float(b.confidence[i]), float(b.accuracy[i]), int(b.count[i]))
                  for i in range(n_bins) if b.count[i] > 0])


def test_pooled_bins_are_the_bins_of_all_seeds_predictions_together():
    torch.manual_seed(0)
    probs = [torch.randn(300, 10).mul(2).softmax(1) for _ in range(2)]
    labels = [torch.randint(0, 10, (300,)) for _ in range(2)]
    n_bins = 10
    pooled = pooled_reliability({"m": [as_rows(reliability(p, y, n_bins), n_bins) for p, y in zip(probs, labels)]})
    together = as_rows(reliability(torch.cat(probs), torch.cat(labels), n_bins), n_bins)
    assert [r["count"] for r in pooled] == [r["count"] for r in together]
    assert [r["confidence"] for r in pooled] == pytest.approx([r["confidence"] for r in together], abs=1e-6)
    assert [r["accuracy"] for r in pooled] == pytest.approx([r["accuracy"] for r in together], abs=1e-6)


def write_run(method: str, seed: int, result: dict, reliability_rows: str) -> None:
    write_json(paths.evaluation(method, seed), result)
    write_text(paths.reliability_bins(method, seed), "bin_centre,confidence,accuracy,count\n" + reliability_rows)


def test_report_over_two_seeds_from_the_evaluate_stages_files(in_tmp):
    write_run("warm", 0, evaluation(0.9, 30, [0.5, 0.9]), "0.9500,0.960000,1.000000,3\n")
    write_run("warm", 1, evaluation(1.0, 20, [0.6, 1.0]), "0.9500,0.940000,0.000000,1\n")
    result = report(["warm"], [0, 1])
    row = result.summary["warm"]
    assert row["final_acc"] == pytest.approx(0.95)
    assert row["final_acc_std"] == pytest.approx(statistics.stdev([0.9, 1.0]))
    assert row["cer"] == 25 and row["seeds"] == 2
    accuracy = result.plots[paths.ACCURACY_PLOT].splitlines()
    assert accuracy[0] == "method,chunk,test_acc,cum_updates,test_acc_std"
    chunk_2 = accuracy[2].split(",")  # seeds' chunk-2 accuracies 0.9 and 1.0, 200 updates so far
    assert chunk_2[:2] == ["warm", "2"] and float(chunk_2[2]) == pytest.approx(0.95) and chunk_2[3] == "200"
    assert result.plots[paths.RELIABILITY_PLOT] == "method,confidence,accuracy,count\nwarm,0.955000,0.750000,4\n"
    severities = result.plots[paths.CORRUPTION_PLOT].splitlines()[1:]
    assert [line.split(",")[:2] for line in severities] == [["warm", "1"], ["warm", "2"]]
    assert float(severities[0].split(",")[2]) == pytest.approx(0.85)
    assert read_reliability("warm", 1) == bins((0.95, 0.94, 0.0, 1))
    assert result.tables.startswith("mean ± std over 2 run seeds (0, 1)")


def test_report_stage_writes_nothing_when_a_run_is_missing(in_tmp, params_dict):
    (in_tmp / "params.yaml").write_text(yaml.safe_dump({**params_dict, "seeds": [0, 1], "methods": {"warm": {}}}))
    write_run("warm", 0, evaluation(0.9, 30, [0.5, 0.9]), "0.9500,0.960000,1.000000,3\n")
    with pytest.raises(LureError, match=r"metrics/evaluate/seed_1/warm.json is missing.*seed 1"):
        report(["warm"], [0, 1])
    result = run_stage("stages.report", cwd=in_tmp)
    assert result.returncode == 2 and "seed_1/warm.json is missing" in result.stderr
    assert not any(p.exists() for p in (paths.SUMMARY, paths.ACCURACY_PLOT, paths.RELIABILITY_PLOT))


@pytest.mark.parametrize("stage", [("stages.branch", "lure"), ("stages.relearn", "lure", "2")])
def test_stage_refuses_a_seed_not_in_seeds(tmp_path, params_dict, stage):
    params_dict["seeds"] = [0, 1]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params_dict))
    result = run_stage(*stage, "--seed", "7", cwd=tmp_path)
    assert result.returncode == 2
    assert "--seed 7: seeds in params.yaml lists only 0, 1" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == [tmp_path / "params.yaml"]


def test_the_compact_table_fits_a_terminal_of_120_columns_with_three_seeds():
    from lure.report import COLUMNS, COMPACT_TIMED

    final = {name: 0.987654 for name in COLUMNS if name not in ("cer", "updates", "never_recovered", "wall_s")}
    runs = {s: {"final": {**final, "cer": 30 + s, "updates": 1500}, "chunks": {"chunk_1": {"test_acc": 0.9,
                                                                                      "updates": 10}}}
            for s in (0, 1, 2)}
    evaluations = {name: runs for name in ("warm", "scratch", "lure", "continual_backprop")}
    timing = {name: {"wall_s": 123.4, "wall_s_std": 5.6} for name in evaluations}
    compact = tables(evaluations, COMPACT_TIMED, timing, digits=3)
    assert max(len(line) for line in compact.splitlines()) <= 120
    assert "| 0.988 ± 0 |" in compact and "| 31.0 ± 1.0 |" in compact and "| 123.4 ± 5.6 |" in compact
    assert max(len(line) for line in tables(evaluations).splitlines()) > 120  # the full table, on request


def test_each_column_prints_its_means_and_stds_with_one_precision():
    """Counts (whole numbers in every run: cer, updates) and wall seconds with one decimal, a whole
    mean of counts too; shares with `digits`; the paired differences of a count likewise."""
    from lure.report import paired_table

    def run(acc: float, cer: int, updates: int) -> dict:
        return {"final": {"final_acc": acc, "cer": cer, "updates": updates},
                "chunks": {"chunk_1": {"test_acc": acc, "updates": updates}}}

    evaluations = {"warm": {0: run(0.9, 30, 1500), 1: run(0.95, 29, 1500), 2: run(1.0, 30, 1500)},
                   "lure": {0: run(0.9, 33, 1500), 1: run(0.9, 34, 1500), 2: run(0.9, 31, 1500)},
                   "scratch": {0: run(0.8, 3, 1400), 1: run(0.85, 5, 1600), 2: run(0.9, 4, 1500)}}
    timing = {"warm": {"wall_s": 123.4, "wall_s_std": 5.6862}, "lure": {"wall_s": 98.76, "wall_s_std": 0.123},
              "scratch": {"wall_s": 101.0, "wall_s_std": 12.0}}
    lines = tables(evaluations, ("final_acc", "cer", "updates", "wall_s"), timing, digits=3).splitlines()
    assert lines[4:7] == ["| warm | 0.950 ± 0.050 | 29.7 ± 0.6 | 1500.0 ± 0 | 123.4 ± 5.7 |",
                          "| lure | 0.900 ± 0 | 32.7 ± 1.5 | 1500.0 ± 0 | 98.8 ± 0.1 |",
                          "| scratch | 0.850 ± 0.050 | 4.0 ± 1.0 | 1500.0 ± 100.0 | 101.0 ± 12.0 |"]
    paired = paired_table(evaluations, "warm", ("cer", "final_acc"), digits=3).splitlines()
    assert paired[2] == "| lure | cer | 3 | +3.0 | [-2.0, +8.0] | includes 0 |"
    assert paired[4] == "| lure | final_acc | 3 | -0.050 | [-0.174, +0.074] | includes 0 |"
    one_seed = tables({m: {0: runs[0]} for m, runs in evaluations.items()}, ("final_acc", "cer", "updates"), digits=3)
    assert "| scratch | 0.800 | 3 | 1400 |" in one_seed  # one run's counts as they are
    # a spread that reaches 10 under a smaller mean (a diverged seed's loss) sets its column's decimals
    # as a mean would; seconds take one decimal even when every run is short
    chunks = {"chunk_1": {"test_acc": 0.5, "updates": 1}}
    loss = {m: {s: {"final": {"nll": v}, "chunks": chunks} for s, v in enumerate(values)}
            for m, values in {"warm": [0.31, 0.35], "lure": [0.3, 24.3]}.items()}
    short = {"warm": {"wall_s": 4.25, "wall_s_std": 0.5}, "lure": {"wall_s": 3.5, "wall_s_std": 0.25}}
    rows = tables(loss, ("nll", "wall_s"), short, digits=3).splitlines()[4:6]
    assert rows == ["| warm | 0.3 ± 0.0 | 4.2 ± 0.5 |", "| lure | 12.3 ± 17.0 | 3.5 ± 0.2 |"]


def two_seeds_reported(folder, params_dict):
    """A run of warm over two seeds up to the report, its plot data and wall times written as the stage
    writes them."""
    params_dict.update(seeds=[0, 1], methods={"warm": {}})
    (folder / "params.yaml").write_text(yaml.safe_dump(params_dict))
    for seed, (acc, cer) in enumerate([(0.9, 30), (1.0, 20)]):
        write_run("warm", seed, evaluation(acc, cer, [0.5, acc]), "0.9500,0.960000,1.000000,3\n")
        write_json(paths.learn_log(seed) / paths.STAGE_TIMING, {"train": 10.0 + seed})
        write_json(paths.curves_log("warm", seed, 2) / paths.STAGE_TIMING, {"train": 20.0})
    result = report(["warm"], [0, 1])
    for path, text in result.plots.items():
        write_text(path, text)
    write_json(paths.TIMING, result.timing)
    return result


def test_the_report_stage_and_lure_results_print_the_same_compact_table(in_tmp, params_dict):
    from lure.cli import results_text

    result = two_seeds_reported(in_tmp, params_dict)
    assert "| method | final_acc | cer | wall_s |" in result.tables  # the compact columns the run has
    assert "| warm | 0.950 ± 0.071 | 25.0 ± 7.1 | 30.5 ± 0.7 |" in result.tables
    assert results_text() == result.tables + "\n"


def test_lure_results_keep_keeps_every_plot_file_of_the_report(in_tmp, params_dict):
    from lure.cli import results_text

    result = two_seeds_reported(in_tmp, params_dict)
    assert set(result.plots) == set(paths.PLOTS) and set(paths.PLOTS) < set(paths.stage_outputs("report"))
    results_text(keep=in_tmp / "results" / "kept")
    kept = in_tmp / "results" / "kept"
    assert sorted(p.name for p in kept.iterdir()) == sorted(
        ["evaluate", "params.yaml", paths.TIMING.name, *(path.name for path in result.plots)])
    assert all((kept / path.name).read_text() == text for path, text in result.plots.items())


def test_the_readmes_result_tables_are_what_the_committed_results_give():
    """Every block <!-- lure results ARGS --> of README.md holds what `lure results ARGS` prints
    from a folder of kept results (results/<name>)."""
    from lure.cli import README_BLOCK, readme_text

    readme = (ROOT / "README.md").read_text()
    blocks = [m["args"].strip() for m in README_BLOCK.finditer(readme)]
    assert "--from results/digits-default --all" in blocks  # the default pipeline's
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        assert readme_text(readme) == readme, "README.md is stale: uv run lure readme"


def test_readme_blocks_are_rewritten_from_the_results(in_tmp, params_dict):
    from lure.cli import readme_text

    params_dict["methods"] = {"warm": {}}
    (in_tmp / "params.yaml").write_text(yaml.safe_dump(params_dict))
    write_run("warm", 0, evaluation(0.9, 30, [0.5, 0.9]), "0.9500,0.960000,1.000000,3\n")
    text = "before\n<!-- lure results --columns final_acc,cer -->\nstale figures\n<!-- /lure results -->\nafter\n"
    assert readme_text(text) == ("before\n<!-- lure results --columns final_acc,cer -->\n\n"
                                 "| method | final_acc | cer |\n|---|---:|---:|\n| warm | 0.9000 | 30 |\n\n"
                                 "| method | chunk 1 | chunk 2 |\n|---|---:|---:|\n| warm | 0.5000 | 0.9000 |\n\n"
                                 "<!-- /lure results -->\nafter\n")


def test_paired_differences_are_scipys_paired_t_interval():
    from scipy.stats import ttest_rel

    from lure.report import paired_differences, paired_table

    rng = np.random.default_rng(0)
    warm = rng.uniform(0.5, 0.7, 5)
    lure_ = warm + rng.normal(0.02, 0.01, 5)  # better on every seed
    noise = warm + rng.normal(0.0, 0.05, 5)
    evaluations = {name: {s: {"final": {"final_acc": float(v[i]), "ece": 0.1}} for i, s in enumerate([3, 1, 4, 0, 2])}
                   for name, v in (("warm", warm), ("lure", lure_), ("noisy", noise))}
    d = paired_differences(evaluations, "warm", "final_acc")
    for method, values in (("lure", lure_), ("noisy", noise)):
        reference = ttest_rel(values, warm)
        low, high = reference.confidence_interval(0.95)
        assert d[method]["n"] == 5 and d[method]["mean"] == pytest.approx(np.mean(values - warm))
        assert d[method]["ci95"] == pytest.approx([low, high])
    assert d["lure"]["ci95"][0] > 0
    table = paired_table(evaluations, "warm", ("final_acc", "ece"), digits=3)
    assert "| lure | final_acc | 5 |" in table and table.count("> 0") == 1 and "| lure | ece | 5 | +0.000 |" in table
    one = {m: {0: runs[0]} for m, runs in evaluations.items()}
    assert paired_differences(one, "warm", "final_acc")["lure"]["ci95"] is None
    with pytest.raises(LureError, match="--paired: scratch is not a method of these runs"):
        paired_differences(evaluations, "scratch", "final_acc")


def test_lure_results_paired_from_kept_results():
    from lure.cli import results_text

    text = results_text(kept=ROOT / "results" / "digits-methods", paired="warm", timing=False)
    assert "| method − warm | metric | seeds | mean difference | 95% interval |" in text
    assert "| scratch | final_acc | 3 |" in text


def test_lure_results_pairs_on_the_metrics_asked_for_while_the_table_shows_its_columns():
    from lure.cli import results_text

    text = results_text(kept=ROOT / "results" / "digits-methods", columns="final_acc,ece,updates", paired="warm",
                        paired_on="ece", timing=False)
    assert "| method | final_acc | ece | updates |" in text
    paired = text[text.index("| method − warm |"):]
    assert "| scratch | ece | 3 |" in paired and "final_acc" not in paired and "updates" not in paired
    with pytest.raises(LureError, match="--paired-on: no column bogus"):
        results_text(kept=ROOT / "results" / "digits-methods", paired="warm", paired_on="ece,bogus")
    with pytest.raises(LureError, match="--paired-on: pairs with the method of --paired, which is missing"):
        results_text(kept=ROOT / "results" / "digits-methods", paired_on="ece")
    with pytest.raises(LureError, match="--paired: bogus is not a method of these runs"):
        results_text(kept=ROOT / "results" / "digits-methods", paired="bogus", paired_on="ece")


def test_convergence_table_gives_the_rule_accuracy_and_epochs_per_chunk():
    from lure.report import convergence_table

    def run(acc1, ep1, acc2, ep2):  # the final model's train_acc (eval mode) differs from the rule's
        return {"final": {}, "chunks": {"chunk_1": {"train_acc": 0.5, "epoch_train_acc": acc1, "epochs_run": ep1},
                                        "chunk_2": {"train_acc": 0.5, "epoch_train_acc": acc2, "epochs_run": ep2}}}

    evaluations = {"warm": {0: run(0.992, 30, 0.995, 4), 1: run(0.990, 34, 0.997, 6)},
                   "scratch": {0: run(0.992, 30, 0.985, 300), 1: run(0.990, 34, 0.993, 41)}}
    lines = convergence_table(evaluations).splitlines()
    assert lines[0] == "| method | chunk 1 | chunk 2 |"
    assert lines[2] == "| warm | 0.991 (min 0.990), 32 epochs (max 34) | 0.996 (min 0.995), 5 epochs (max 6) |"
    assert lines[3].endswith("| 0.989 (min 0.985), 170 epochs (max 300) |")
    without_rule = {"warm": {0: {"final": {}, "chunks": {"chunk_1": {"train_acc": 0.5}}}}}
    assert convergence_table(without_rule).splitlines()[2] == "| warm | 0.500 (min 0.500) |"


def test_readme_blocks_take_the_paired_and_convergence_options(in_tmp, params_dict):
    from lure.cli import readme_text

    params_dict["methods"] = {"warm": {}, "scratch": {}}
    params_dict["seeds"] = [0, 1]
    (in_tmp / "params.yaml").write_text(yaml.safe_dump(params_dict))
    for seed, (warm, scratch) in enumerate([(0.80, 0.84), (0.70, 0.76)]):
        write_run("warm", seed, evaluation(warm, 30, [0.5, warm]), "0.9500,0.960000,1.000000,3\n")
        write_run("scratch", seed, evaluation(scratch, 30, [0.5, scratch]), "0.9500,0.960000,1.000000,3\n")
    text = readme_text("<!-- lure results --columns final_acc --paired warm --convergence -->\n<!-- /lure results -->")
    # differences 0.04 and 0.06: mean 0.05 +- t(0.975, 1) * std / sqrt(2) = 12.706 * 0.01414 / 1.414
    assert "| scratch | final_acc | 2 | +0.0500 | [-0.0771, +0.1771] | includes 0 |" in text
    # the accuracy table and the convergence table (these runs recorded no training accuracy)
    assert text.count("| method | chunk 1 | chunk 2 |") == 2 and "| warm | - | - |" in text


def test_kept_results_show_the_wall_times_kept_with_them(in_tmp, params_dict):
    from lure.cli import results_text

    params_dict["methods"] = {"warm": {}, "scratch": {}}
    (in_tmp / "params.yaml").write_text(yaml.safe_dump(params_dict))
    for method, acc in (("warm", 0.8), ("scratch", 0.7)):
        write_json(paths.evaluation(method, 0, in_tmp / "kept" / "evaluate"), evaluation(acc, 30, [0.5, acc]))
    shutil.copyfile(in_tmp / "params.yaml", in_tmp / "kept" / "params.yaml")
    assert "wall_s" not in results_text(kept=in_tmp / "kept", timing=False)
    write_json(in_tmp / "kept" / "timing.json", {"warm": {"wall_s": 12.5}, "scratch": {"wall_s": 30.25}})
    text = results_text(kept=in_tmp / "kept", timing=False)
    assert "| method | final_acc | cer | wall_s |" in text and "| warm | 0.800 | 30 | 12.5 |" in text
    # the wall times are shown, not paired: they are no run's metrics
    text = results_text(kept=in_tmp / "kept", timing=False, columns="final_acc,wall_s", paired="warm")
    assert "| scratch | final_acc | 1 | -0.1000 | - | - |" in text and "| scratch | wall_s |" not in text


def test_the_fire_harness_table_sets_fires_loop_beside_lures_kept_run(in_tmp, params_dict):
    """bench/fire_harness.py's result beside lure's kept run of the preset: per-chunk means on each
    side, and the final accuracies' difference with Welch's interval (the sides' seeds are not paired)."""
    from scipy.stats import t

    from lure.cli import bench_table

    theirs = {"warm": [[0.30, 0.33], [0.31, 0.35], [0.29, 0.34]], "fire": [[0.30, 0.36], [0.31, 0.37], [0.29, 0.38]]}
    ours = {"warm": [[0.32, 0.40], [0.33, 0.41], [0.31, 0.45]], "fire": [[0.32, 0.50], [0.33, 0.52], [0.31, 0.48]]}
    write_json(in_tmp / "bench/results/fireharness-test.json", {
        "lure_results": "results/kept", "seeds": [0, 1, 2], "commit": "0" * 40, "seconds": 60.0,
        "machine": {"cores": 2, "cpu": "test", "torch_threads": 1}, "versions": {"torch": "x"},
        "methods": {m: {"runs": [{"test_acc": acc} for acc in runs],
                        "test_acc_by_chunk": {"mean": [statistics.fmean(c) for c in zip(*runs)]}}
                    for m, runs in theirs.items()}})
    params_dict["seeds"] = [0, 1, 2]
    params_dict["methods"] = {"warm": {}, "fire": {}}
    write_text(in_tmp / "results/kept/params.yaml", yaml.safe_dump(params_dict))
    for method, runs in ours.items():
        for seed, accs in enumerate(runs):
            write_json(in_tmp / f"results/kept/evaluate/seed_{seed}/{method}.json", evaluation(accs[-1], 0, accs))
    table = bench_table("fireharness-test")
    [warm] = [line for line in table.splitlines() if line.startswith("| warm |")]
    # Welch's interval, stated here from its textbook form
    a, b = [r[-1] for r in ours["warm"]], [r[-1] for r in theirs["warm"]]
    va, vb = statistics.variance(a) / 3, statistics.variance(b) / 3
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 2)
    diff, half = statistics.fmean(a) - statistics.fmean(b), t.ppf(0.975, df) * (va + vb) ** 0.5
    assert warm == (f"| warm | 0.300 / 0.340 | 0.320 / 0.420 | 0.340 ± 0.010 | 0.420 ± 0.026 | "
                    f"{diff:+.3f} [{diff - half:+.3f}, {diff + half:+.3f}] |")
    assert "| fire | 0.300 / 0.370 | 0.320 / 0.500 | 0.370 ± 0.010 | 0.500 ± 0.020 | +0.130 [" in table
    assert "run seeds [0, 1, 2] (FIRE's harness) and [0, 1, 2] (lure)" in table
    shutil.rmtree(in_tmp / "results/kept")
    assert "| warm | 0.300 / 0.340 | not run yet | 0.340 ± 0.010 | - | - |" in bench_table("fireharness-test")


def test_the_reproduce_table_totals_the_studies_run_one_by_one_and_those_run_at_once_apart(in_tmp):
    from lure.cli import bench_table

    def study(seconds: float, stages: int, **extra) -> dict:
        return {"seconds": seconds, "stages_run": stages, "seeds": [0, 1], "methods": ["warm"], "torch": "x",
                "commit": "0" * 40, "machine": {"cores": 2, "cpu": "test"}, **extra}

    write_json(in_tmp / "bench/results/reproduce-test.json", {"studies": {
        "a": study(600, 10), "b": study(1200, 20), "a-fresh": study(300, 5, overrides=["x=1"]),
        "c": study(900, 30, beside=["d"], threads=1),
        "d": study(1500, 40, beside=["c"], threads=1, stages_skipped=7, note="a second worker ran 7 stages")}})
    table = bench_table("reproduce-test")
    assert "| all run one by one, variants apart | | | 30 | 30.0 |" in table  # a and b: 10 + 20 minutes
    assert "| c (at once with d, 1 thread each) | 2 | warm | 30 | 15.0 |" in table
    assert "| c, d, at once | | | 70 | 25.0 |" in table  # the longer one's wall time, not the sum
    # stages another worker ran beside it were restored, not kept from an earlier run
    assert "| d (at once with c, 1 thread each) (a second worker ran 7 stages) | 2 | warm | 40 (+7 restored from the " \
           "run-cache) | 25.0 |" in table


def test_a_metric_only_one_method_has_shows_as_a_dash_for_the_others_and_is_not_paired():
    """The tortoise's accuracy: hare_tortoise's evaluations carry it, warm's do not."""
    from lure.report import markdown_table, paired_table, summary

    evaluations = {"warm": {s: evaluation(acc, 10, [acc]) for s, acc in enumerate([0.40, 0.42])},
                   "hare_tortoise": {s: evaluation(acc, 10, [acc]) for s, acc in enumerate([0.44, 0.47])}}
    for seed, acc in enumerate([0.50, 0.52]):
        evaluations["hare_tortoise"][seed]["final"]["tortoise_acc"] = acc
    table = markdown_table(summary(evaluations), ("final_acc", "tortoise_acc"))
    assert table.splitlines()[0] == "| method | final_acc | tortoise_acc |"
    assert "| warm | 0.4100 ± 0.0141 | - |" in table
    assert "| hare_tortoise | 0.4550 ± 0.0212 | 0.5100 ± 0.0141 |" in table
    paired = paired_table(evaluations, "warm", ("final_acc", "tortoise_acc"))
    assert "| hare_tortoise | final_acc | 2 | +0.0450 |" in paired and "tortoise_acc" not in paired
