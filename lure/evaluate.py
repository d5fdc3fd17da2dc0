"""A run's evaluation: its model after every chunk on the test set; for the last model,
calibration (also after temperature scaling) and robustness to corruptions; the compute spent and
the stability gap over its chunks, from what its training stages recorded. (Their wall times
are in their logs, not here: a timing that differs must not make the same results look new.)"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lure import paths
from lure.checkpoints import load_checkpoint
from lure.chunks import load_chunks, load_meta, load_test
from lure.config import Params
from lure.corruptions import names_for
from lure.device import pick_device, provenance
from lure.errors import LureError
from lure.io import read_json
from lure.metrics import anytime_summary, calibration, expected_calibration_error, fit_temperature, reliability
from lure.models import accuracy, model_for, predict
from lure.placement import place
from lure.replay import replay
from lure.robustness import corruption_metrics
from lure.stability import stability_summary

# What the evaluation copies, per chunk, from the training stages' metrics.
TRAINING_KEYS = ("val_acc", "train_acc", "gen_gap", "reset_fraction", "updates", "images", "epochs_run",
                 "epoch_train_acc", "noisy_labels", "networks_val_acc")


@dataclass
class Evaluation:
    result: dict  # final metrics, per chunk, robustness, provenance
    reliability_csv: str  # the last model's reliability bins on the clean test set
    summary: str


def training_metrics(method: str, seed: int, n_chunks: int) -> list[dict]:
    """What the learn and relearn stages of a run recorded, for chunks 1..n."""
    files = [paths.learn_metrics(seed)] + [paths.relearn_metrics(method, seed, k) for k in range(2, n_chunks + 1)]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise LureError(f"missing training metrics {', '.join(missing)}: run the relearn stages first")
    first, *rest = (read_json(f) for f in files)
    if "chunk_1" not in first:
        raise LureError(f"{files[0]} holds no chunk_1: re-run the learn stage of seed {seed} (uv run dvc repro)")
    return [first["chunk_1"], *rest]


def evaluate(p: Params, method: str, seed: int) -> Evaluation:
    p.check_method(method)
    p.check_run_seed(seed)
    device = pick_device(p.train)
    meta = load_meta()
    placed = place({"test": load_test(), "val": replay(load_chunks(p.n_chunks), p.replay, p.seed).val}, device,
                   p.train.placement)
    test = placed["test"]
    trained = training_metrics(method, seed, p.n_chunks)
    bins, batch = p.evaluate.ece_bins, p.evaluate.batch_size

    def network(weights: dict) -> torch.nn.Module:
        model = model_for(p.model, meta, device)
        model.load_state_dict(weights)
        return model

    # each chunk's model, and the test accuracy of every other network its method carried
    # (lure.methods.base: Hare & Tortoise's tortoise), each checkpoint read once
    test_logits, others, last = [], [], None
    for k in range(1, p.n_chunks + 1):
        checkpoint = load_checkpoint(paths.model(method, seed, k))
        last = network(checkpoint.weights)
        test_logits.append(predict(last, test, batch))
        others.append({name: accuracy(network(weights), test, batch)
                       for name, weights in checkpoint.method_state.get("networks", {}).items()})
    test_errors = [int((logits.argmax(1) != test.y).sum()) for logits in test_logits]
    test_acc = [1 - errors / len(test) for errors in test_errors]
    per_chunk = {f"chunk_{k}": {"test_acc": acc, **{key: t[key] for key in TRAINING_KEYS if key in t},
                                **({"stability": t["stability"]} if "stability" in t else {}),
                                **({"networks_test_acc": nets} if nets else {})}
                 for k, (acc, t, nets) in enumerate(zip(test_acc, trained, others), start=1)}

    # The last model: calibration on the test set (also after temperature scaling on its validation
    # images) and robustness on the corrupted sets.
    logits = test_logits[-1]
    val = placed["val"]
    temperature = fit_temperature(predict(last, val, batch), val.y)
    final = {
        **anytime_summary(test_acc, test_errors),
        **{key: value for key, value in calibration(logits, test.y, bins).items() if key != "acc"},
        "ece_ts": expected_calibration_error((logits.float() / temperature).softmax(1), test.y, bins),
        "temperature": temperature,
        # the mean share of the network's parameters the method reset at chunks 2..N
        "reset_fraction": sum(t.get("reset_fraction", 0.0) for t in trained[1:]) / max(len(trained) - 1, 1),
        "updates": sum(t["updates"] for t in trained),
        "images": sum(t["images"] for t in trained),
        **stability_summary([t["stability"] for t in trained[1:] if "stability" in t]),
        # the last test accuracy of each other network the method carries (Hare & Tortoise: tortoise_acc)
        **{f"{name}_acc": acc for name, acc in others[-1].items()},
    }
    result = {"final": final, "chunks": per_chunk}
    names = names_for(p.robustness.corruptions)
    if names:
        robustness = corruption_metrics(last, names, device, batch, bins)
        final.update(mca=robustness["mca"], rel_robustness=robustness["relative"], ece_corrupt=robustness["ece"])
        result["robustness"] = robustness
    result["provenance"] = provenance(p, seed, device)

    b = reliability(logits.float().softmax(1), test.y, bins)
    rows = [f"{(i + 0.5) / bins:.4f},{b.confidence[i]:.6f},{b.accuracy[i]:.6f},{int(b.count[i])}\n"
            for i in range(bins) if b.count[i] > 0]
    return Evaluation(result, "bin_centre,confidence,accuracy,count\n" + "".join(rows),
                      f"{method} seed {seed}: final acc {final['final_acc']:.4f}, anytime {final['anytime_acc']:.4f}, "
                      f"CER {final['cer']}, ECE {final['ece']:.4f} ({final['ece_ts']:.4f} at T={temperature:.2f})"
                      + (f", corruption acc {final['mca']:.4f}" if names else ""))
