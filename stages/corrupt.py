"""Stage corrupt: corrupted copies of the test set, once for every method (lure.corruptions)."""

import numpy as np
import torch

from lure import paths
from lure.config import load_params
from lure.corruptions import corrupt_images, names_for
from lure.data import load_test
from lure.errors import run_command
from lure.io import atomic_dir, save_arrays
from lure.train import derive_seed, pick_device

SUBSET_STREAM = 5


def main(params: str = "params.yaml") -> None:
    p = load_params(params)
    r = p.robustness
    device = pick_device(p.train.device)
    test = load_test(paths.PREPARED)
    index = np.arange(len(test))
    if r.test_images is not None and r.test_images < len(test):
        rng = np.random.default_rng(derive_seed(p.seed, SUBSET_STREAM))
        index = np.sort(rng.permutation(len(test))[: r.test_images])
    x = torch.from_numpy(test.x[index]).to(device)
    names = names_for(r.corruptions)
    with atomic_dir(paths.CORRUPTED) as tmp:
        save_arrays(tmp / "subset.npz", {"index": index, "y": test.y[index], "x": test.x[index]})
        for name in names:
            copies = [corrupt_images(x, name, s, p.seed).cpu().numpy() for s in r.severities]
            save_arrays(tmp / f"{name}.npz", {"x": np.stack(copies), "severities": np.asarray(r.severities)})
    print(f"{len(names)} corruptions x {len(r.severities)} severities of {len(index)} test images on {device}")


if __name__ == "__main__":
    run_command(main)
