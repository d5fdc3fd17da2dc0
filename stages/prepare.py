"""Stage prepare: cut the source into a test set and N chunks, each with a validation split."""

from lure import paths
from lure.config import load_params
from lure.data import prepare
from lure.errors import run_command


def main(params: str = "params.yaml") -> None:
    p = load_params(params)
    meta = prepare(p, paths.PREPARED)
    print(f"{meta['source']}: {p.n_chunks} chunks of {meta['chunk_train_size']} train + "
          f"{meta['chunk_val_size']} val images; test {meta['test_size']}; {len(meta['classes'])} classes")


if __name__ == "__main__":
    run_command(main)
