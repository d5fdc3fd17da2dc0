"""For a process started with LURE_EMULATED_CUDA=1 and this folder on PYTHONPATH (a stage that DVC
runs in a test): CUDA emulated under CUDA's rules (tests/emulated_cuda.py) for the whole process."""

import os

if os.environ.get("LURE_EMULATED_CUDA") == "1":
    import sys
    from pathlib import Path

    sys.path.append(str(Path(__file__).resolve().parents[2]))  # the repository, for tests.emulated_cuda
    from tests.emulated_cuda import install_for_process

    install_for_process()
