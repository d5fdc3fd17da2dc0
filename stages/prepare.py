"""Stage prepare: cut the source into a test set and N chunks, each with a validation split."""

from lure import paths
from lure.chunks import describe_sizes
from lure.config import PARAMS_FILE, load_params
from lure.errors import ParamsFile, run_command
from lure.prepare import prepare


def main(params_file: ParamsFile = PARAMS_FILE) -> None:
    p = load_params(params_file)
    meta, skipped = prepare(p, paths.PREPARED)
    split = f"{meta['chunk_train_size']} train + {meta['chunk_val_size']} val images"
    chunks = (f"{p.n_chunks} chunks of {split}" if isinstance(p.data.chunk_size, int)
              else f"{describe_sizes(p.data.chunk_size, p.n_chunks)} (chunk 1: {split})")
    print(f"{meta['source']}: {chunks}; test {meta['test_size']}; {len(meta['classes'])} classes"
          + (f"; {len(skipped)} unreadable images left out (listed in {paths.PREPARED / paths.SKIPPED})"
             if skipped else ""))


if __name__ == "__main__":
    run_command(main)
