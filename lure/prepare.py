"""The prepare stage's work: read the source, cut its pool into chunks (lure.chunks), decode the
images that the test set and the chunks take (lure.sources) and write the prepared folder that the
training stages read. Its own module, so that the stages that read the prepared folder do not
depend on the code that reads sources."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from lure import paths
from lure.chunks import check_chunks, cut_indices, noisy_labels, split_chunk
from lure.config import Params
from lure.errors import LureError
from lure.io import atomic_dir, md5, sampled_md5, save_arrays, write_json
from lure.sources import decode, load_source


def prepare(params: Params, out_dir: str | Path) -> tuple[dict, list[str]]:
    """Cut the chunks and the test set into `out_dir`; return the dataset's description
    (meta.json: what a model needs to know, the same whatever the number of chunks) and the
    unreadable image files left out (data.bad_images: skip; listed in skipped.json).

    Besides chunk_<k>.npz, writes seen_<k>.json: the hashes of chunks 1..k. A stage that trains
    on chunks 1..k depends on that one file, so DVC re-runs it exactly when one of them changes.
    """
    source = load_source(params.data, params.seed)
    labels = np.asarray(source.pool.y)
    check_chunks(params, labels)  # first, so that the error names the chunk count asked for
    n = params.n_chunks
    d = params.data
    chunks = [split_chunk(source.pool.take(cut_indices(params, labels, k)), d.val_fraction, k, params.seed)
              for k in range(1, n + 1)]
    with atomic_dir(out_dir) as tmp:
        scratch = tmp / ".decoded"  # images decoded from a folder, until their .npz is written
        scratch.mkdir()
        test, skipped = decode(source.test, scratch, "test set")
        save_arrays(tmp / paths.TEST, {"x": test.x, "y": test.y})
        hashes, samples, sizes = {}, {}, []
        for k, chunk in enumerate(chunks, start=1):
            (train, skipped_train), (val, skipped_val) = decode(chunk.train, scratch, f"chunk {k}"), \
                decode(chunk.val, scratch, f"chunk {k} validation")
            skipped += skipped_train + skipped_val
            for part in (train, val):
                if part.x.shape[1:] != test.x.shape[1:]:
                    raise LureError(f"data.path: train/ images are {part.x.shape[1:]}, test/ images "
                                    f"{test.x.shape[1:]} (channels, height, width); set data.image_size")
            name = paths.chunk_file(k)
            arrays = {"x_train": train.x, "y_train": train.y, "x_val": val.x, "y_val": val.y}
            if d.label_noise and d.label_noise.chunk == k:
                arrays["y_train_noisy"] = noisy_labels(train.y, len(source.classes), d.label_noise.fraction,
                                                       params.seed, k)
            save_arrays(tmp / name, arrays)
            sizes.append((len(train), len(val)))
            del train, val  # their memory maps, before their files go
            shutil.rmtree(scratch)
            scratch.mkdir()
            hashes[name] = md5(tmp / name)
            samples[name] = sampled_md5(tmp / name)
            write_json(tmp / paths.seen_file(k), {"chunks": dict(hashes), "samples": dict(samples)})
        meta = {
            "source": params.data.source,
            "classes": source.classes,
            "image_shape": list(test.x.shape[1:]),
            "pool_size": len(source.pool),
            "test_size": len(test),
            "chunk_train_size": sizes[0][0],
            "chunk_val_size": sizes[0][1],
        }
        write_json(tmp / paths.META, meta)
        if skipped:  # not in meta.json, which must not change when chunks are added
            write_json(tmp / paths.SKIPPED, {"files": skipped})
        del test
        shutil.rmtree(scratch)
    return meta, skipped
