"""Stage corrupt: corrupted copies of the test set, once for every method (lure.corruptions)."""

from lure import paths
from lure.config import PARAMS_FILE, load_params
from lure.corruptions import corrupted_sets
from lure.errors import ParamsFile, run_command
from lure.io import atomic_dir, save_arrays


def main(params_file: ParamsFile = PARAMS_FILE) -> None:
    sets = corrupted_sets(load_params(params_file))
    with atomic_dir(paths.CORRUPTED) as tmp:
        save_arrays(tmp / paths.SUBSET, sets.subset)
        for name, arrays in sets.copies:
            save_arrays(tmp / paths.corrupted_file(name), arrays)
    print(sets.summary)


if __name__ == "__main__":
    run_command(main)
