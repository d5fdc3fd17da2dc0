#!/usr/bin/env bash
# The device check's one command, on the GPU machine, from the repository root, with .gpu/ carried
# (bench/gpu/check.py pack made it here): install the wheels beside the image's packages (at most
# 20 s: check.py's INSTALL_LIMIT_S), then run the parts (check.py run; arguments are passed on).
# Each part's results go to $OUT/<part>.json as it ends, every command's output to $OUT/check.log.
set -u
export LURE_CHECK_STARTED=$(date +%s.%N)  # check.py stops every part by 6 minutes after this
timeout 20 python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .gpu/wheels/*.whl || exit
export LURE_CHECK_INSTALL_S=$(python3 -c "import time; print(round(time.time() - $LURE_CHECK_STARTED, 1))")
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 DVC_NO_ANALYTICS=1 PATH="/tmp/site/bin:$PATH"
python3 -c "import dvc, dvclive, pydantic, lure.cli; print('packages: dvc', dvc.__version__)" || exit
exec python3 bench/gpu/check.py run --out "${OUT:-/tmp/lure-gpu-check-out}" "$@"
