"""Stage branch: a method's chain starts from the shared chunk-1 model (a copy into its folder).

DVC templates cannot compute "chunk k - 1", so every relearn stage reads models/<method>/chunk_<k-1>.pt;
this copy makes that path exist for k = 2 while chunk 1 is learned only once.
"""

import shutil

from lure import paths
from lure.errors import LureError, run_command
from lure.io import atomic_path


def main(method: str) -> None:
    if not paths.FIRST_MODEL.is_file():
        raise LureError(f"{paths.FIRST_MODEL} is missing: run the learn stage first")
    with atomic_path(paths.model_path(method, 1)) as tmp:
        shutil.copyfile(paths.FIRST_MODEL, tmp)


if __name__ == "__main__":
    run_command(main)
