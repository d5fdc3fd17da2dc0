"""Stage evaluate: one method's model after every chunk on the test set; calibration of the last;
compute spent over the whole sequence."""

import json

from lure import paths
from lure.config import load_params
from lure.data import load_meta, load_test
from lure.errors import LureError, run_command
from lure.io import write_json
from lure.metrics import anytime_summary, calibration
from lure.models import model_for
from lure.train import Data, load_checkpoint, pick_device, predict, provenance


def chunk_training_metrics(method: str, n_chunks: int) -> list[dict]:
    """What the learn and relearn stages recorded, for chunks 1..n."""
    files = [paths.LEARN_METRICS] + [paths.relearn_metrics_path(method, k) for k in range(2, n_chunks + 1)]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise LureError(f"missing training metrics {', '.join(missing)}: run the relearn stages first")
    first, *rest = (json.loads(f.read_text()) for f in files)
    return [first["chunk_1"], *rest]


def main(method: str, params: str = "params.yaml") -> None:
    p = load_params(params)
    device = pick_device(p.train.device)
    meta = load_meta(paths.PREPARED)
    test = Data.of(load_test(paths.PREPARED), device)
    trained = chunk_training_metrics(method, p.n_chunks)

    per_chunk, test_acc, test_errors = {}, [], []
    for k in range(1, p.n_chunks + 1):
        model = model_for(p.model, meta).to(device)
        load_checkpoint(paths.model_path(method, k), model)
        logits = predict(model, test, p.evaluate.batch_size)
        errors = int((logits.argmax(1) != test.y).sum())
        test_acc.append(1 - errors / len(test))
        test_errors.append(errors)
        t = trained[k - 1]
        per_chunk[f"chunk_{k}"] = {
            "test_acc": test_acc[-1],
            "val_acc": t["val_acc"],
            "train_acc": t["train_acc"],
            "gen_gap": t["gen_gap"],
            "updates": t["updates"],
            "images": t["images"],
            "train_s": t["train_s"],
        }
    last_model_calibration = calibration(logits, test.y, p.evaluate.ece_bins)  # logits of chunk N's model
    final = {
        **anytime_summary(test_acc, test_errors),
        **{key: value for key, value in last_model_calibration.items() if key != "acc"},
        "updates": sum(t["updates"] for t in trained),
        "images": sum(t["images"] for t in trained),
        "wall_s": round(sum(t["train_s"] + t.get("forget_s", 0.0) for t in trained), 3),  # forget + train
    }
    write_json(paths.evaluate_metrics_path(method),
               {"final": final, "chunks": per_chunk, "provenance": provenance(p.seed, device)})
    print(f"{method}: final acc {final['final_acc']:.4f}, anytime {final['anytime_acc']:.4f}, "
          f"CER {final['cer']}, ECE {final['ece']:.4f}")


if __name__ == "__main__":
    run_command(main)
