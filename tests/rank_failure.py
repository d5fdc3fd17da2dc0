"""A command for tests/test_distributed.py: launched like a training stage with
train.processes: 2, rank 1 fails with a user error while rank 0 waits for it in a collective
(which would wait forever if the failure did not stop every rank)."""

import torch

from lure import distributed
from lure.config import PARAMS_FILE, load_params
from lure.errors import LureError, ParamsFile, run_command


def main(params_file: ParamsFile = PARAMS_FILE) -> None:
    if distributed.start(load_params(params_file).train):
        return
    if distributed.rank() == 1:
        raise LureError("rank 1 failed on purpose")
    distributed.all_sum(torch.zeros(1))
    print("rank 0 was not stopped")


if __name__ == "__main__":
    run_command(main)
