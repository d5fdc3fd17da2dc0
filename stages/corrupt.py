"""Stage corrupt: corrupted copies of the test set, once for every method (lure.corruptions)."""

import numpy as np

from lure import paths
from lure.config import PARAMS_FILE, load_params
from lure.corruptions import corrupted_copies, corrupted_test_set, names_for
from lure.device import pick_device
from lure.errors import ParamsFile, run_command
from lure.io import atomic_dir, save_arrays


def main(params_file: ParamsFile = PARAMS_FILE) -> None:
    p = load_params(params_file)
    device = pick_device(p.train.device)
    subset = corrupted_test_set(p)
    severities = np.asarray(p.robustness.severities)
    with atomic_dir(paths.CORRUPTED) as tmp:
        save_arrays(tmp / paths.SUBSET, subset)
        for name, copies in corrupted_copies(p, subset["x"], device):
            save_arrays(tmp / paths.corrupted_file(name), {"x": copies, "severities": severities})
    print(f"{len(names_for(p.robustness.corruptions))} corruptions x {len(severities)} severities of "
          f"{len(subset['index'])} test images on {device}")


if __name__ == "__main__":
    run_command(main)
