"""Stage evaluate: one run (method, seed): its model after every chunk on the test set; for the
last model, calibration (also after temperature scaling) and robustness to corruptions; compute spent."""

import json

import typer

from lure import paths
from lure.config import load_params
from lure.corruptions import names_for
from lure.data import load_chunks, load_meta, load_test
from lure.errors import LureError, run_command
from lure.io import write_json, write_text
from lure.metrics import anytime_summary, calibration, expected_calibration_error, fit_temperature, reliability
from lure.models import model_for
from lure.robustness import corruption_metrics
from lure.runs import check_method, check_run_seed
from lure.stability import stability_summary
from lure.train import Data, load_checkpoint, pick_device, predict, provenance, replay_data


def chunk_training_metrics(method: str, seed: int, n_chunks: int) -> list[dict]:
    """What the learn and relearn stages of a run recorded, for chunks 1..n."""
    files = [paths.learn_metrics_path(seed)] + [paths.relearn_metrics_path(method, seed, k)
                                               for k in range(2, n_chunks + 1)]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise LureError(f"missing training metrics {', '.join(missing)}: run the relearn stages first")
    first, *rest = (json.loads(f.read_text()) for f in files)
    return [first["chunk_1"], *rest]


def main(method: str, seed: int = typer.Option(..., help="run seed, one of `seeds` in params.yaml"),
         params: str = "params.yaml") -> None:
    p = load_params(params)
    check_method(p, method, params)
    check_run_seed(p, seed, params)
    device = pick_device(p.train.device)
    meta = load_meta(paths.PREPARED)
    test = Data.of(load_test(paths.PREPARED), device)
    trained = chunk_training_metrics(method, seed, p.n_chunks)
    bins, batch = p.evaluate.ece_bins, p.evaluate.batch_size

    per_chunk, test_acc, test_errors = {}, [], []
    for k in range(1, p.n_chunks + 1):
        model = model_for(p.model, meta).to(device)
        load_checkpoint(paths.model_path(method, seed, k), model)
        logits = predict(model, test, batch)
        errors = int((logits.argmax(1) != test.y).sum())
        test_acc.append(1 - errors / len(test))
        test_errors.append(errors)
        t = trained[k - 1]
        per_chunk[f"chunk_{k}"] = {"test_acc": test_acc[-1], **{key: t[key] for key in (
            "val_acc", "train_acc", "gen_gap", "reset_fraction", "updates", "images", "train_s") if key in t}}
        if "stability" in t:
            per_chunk[f"chunk_{k}"]["stability"] = t["stability"]

    # From here on, `model` and `logits` are the last chunk's.
    probs = logits.float().softmax(1)
    _, val, _ = replay_data(load_chunks(paths.PREPARED, p.n_chunks), p, device)
    temperature = fit_temperature(predict(model, val, batch), val.y)
    final = {
        **anytime_summary(test_acc, test_errors),
        **{key: value for key, value in calibration(logits, test.y, bins).items() if key != "acc"},
        "ece_ts": expected_calibration_error((logits.float() / temperature).softmax(1), test.y, bins),
        "temperature": temperature,
        # the mean share of the network's parameters the method reset at chunks 2..N
        "reset_fraction": sum(t.get("reset_fraction", 0.0) for t in trained[1:]) / max(len(trained) - 1, 1),
        "updates": sum(t["updates"] for t in trained),
        "images": sum(t["images"] for t in trained),
        "wall_s": round(sum(t["train_s"] + t.get("forget_s", 0.0) for t in trained), 3),  # forget + train
    }
    final.update(stability_summary([t["stability"] for t in trained[1:] if "stability" in t]))
    result = {"final": final, "chunks": per_chunk}
    names = names_for(p.robustness.corruptions)
    if names:
        robustness = corruption_metrics(model, names, device, batch, bins)
        final.update(mca=robustness["mca"], rel_robustness=robustness["relative"], ece_corrupt=robustness["ece"])
        result["robustness"] = robustness
    result["provenance"] = provenance(p.seed, seed, device)

    b = reliability(probs, test.y, bins)
    rows = [f"{(i + 0.5) / bins:.4f},{b.confidence[i]:.6f},{b.accuracy[i]:.6f},{int(b.count[i])}\n"
            for i in range(bins) if b.count[i] > 0]
    write_text(paths.reliability_path(method, seed), "bin_centre,confidence,accuracy,count\n" + "".join(rows))
    write_json(paths.evaluate_metrics_path(method, seed), result)
    print(f"{method} seed {seed}: final acc {final['final_acc']:.4f}, anytime {final['anytime_acc']:.4f}, CER {final['cer']}, "
          f"ECE {final['ece']:.4f} ({final['ece_ts']:.4f} at T={temperature:.2f})"
          + (f", corruption acc {final['mca']:.4f}" if names else ""))


if __name__ == "__main__":
    run_command(main)
