"""Stage branch: a method's chain starts from its seed's chunk-1 model (a copy into its folder).

DVC templates cannot compute "chunk k - 1", so every relearn stage reads
models/seed_<s>/<method>/chunk_<k-1>.pt; this copy makes that path exist for k = 2 while chunk 1
is learned only once per seed.
"""

import shutil

from lure import paths
from lure.config import PARAMS_FILE, load_params
from lure.errors import LureError, ParamsFile, RunSeed, run_command
from lure.io import atomic_path, check_torch_archive


def main(method: str, seed: RunSeed, params_file: ParamsFile = PARAMS_FILE) -> None:
    p = load_params(params_file)
    p.check_method(method)
    p.check_run_seed(seed)
    first = paths.first_model(seed)
    if not first.is_file():
        raise LureError(f"{first} is missing: run the learn stage of seed {seed} first")
    check_torch_archive(first)  # a copy of a corrupt file would be cached as this stage's output
    with atomic_path(paths.model(method, seed, 1)) as tmp:
        shutil.copyfile(first, tmp)


if __name__ == "__main__":
    run_command(main)
