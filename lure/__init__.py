"""lure: Learn, Unlearn, Relearn on data that arrives in chunks."""

import os

__version__ = "0.1.0"

# cuBLAS reads its workspace setting once, at a process's first cuBLAS call, and deterministic
# algorithms (train.deterministic) need a fixed one: set here, before any of lure's code can use
# cuBLAS (a test process may use it through torch.linalg long before a stage picks its device).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
