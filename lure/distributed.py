"""Data-parallel training over several processes, PyTorch's standard way: torchrun starts one
process (rank) per device, DistributedDataParallel averages the gradients.

`train.processes` (per machine) and `train.nodes` in the params file ask for it, so a change of
process count is tracked by DVC and the stage commands stay one line: a training stage started
as usual sees `train.processes x train.nodes > 1`, runs itself again under torchrun (`start`) and
waits for its ranks. A stage started under torchrun by hand checks that the params file agrees.

What a run under N ranks computes is the single-process run's at the same global batch
(`train.batch_size`): every rank draws the same seeded permutation and augmentation and trains on
its slice of each global batch; BatchNorm is synchronised over the ranks (torch's SyncBatchNorm on
CUDA; `GlooBatchNorm2d` below on the CPU, where torch's has no kernels); each rank's loss is
weighted by its share of the batch, so that DDP's average is the global batch's mean even for an
uneven last batch; the learning rate is unchanged. Only the order of floating-point sums differs.
- Forgetting runs once per rank from the same data and seeded draws (SNIP scores, masks, fresh
  weights, ReDo's sampling), then `check_same` compares the ranks' results; continual backprop and
  soft targets sum their per-batch statistics over the ranks, so they decide alike.
- The replay buffer is a seeded function of `seed` alone: every rank builds the same one, with no
  communication.
- Evaluations inside training (validation for best_val, the continual evaluation) are split over
  the ranks and their correct counts summed (`shard`, `all_sum`): every rank gets the same
  integer counts and takes the same decisions.
- One process per machine, the writer (local rank 0), writes the stage's outputs, atomically as
  always; with several nodes each node runs `dvc repro` in its own clone and gets the same files.
"""

from __future__ import annotations

import atexit
import datetime
import hashlib
import inspect
import logging
import os
import sys
import warnings

import torch
import torch.distributed as dist
from torch import nn

from lure.config import TrainSettings
from lure.device import pick_device, world_size
from lure.errors import STOPPED, LureError

RENDEZVOUS_ENV = "LURE_RENDEZVOUS"  # host:port of node 0, on every node, when train.nodes > 1
RENDEZVOUS_WAIT_S = 900  # how long a node waits for the others at a stage's rendezvous
_FAILED = "lure/failed"  # the key a failing rank sets in torchrun's store
_store: dist.TCPStore | None = None  # torchrun's store (its agent serves it), once this rank has joined
_failing = False


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def local_world_size() -> int:
    """Processes on this machine (torchrun's LOCAL_WORLD_SIZE; 1 outside it)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def is_writer() -> bool:
    """Whether this process writes the stage's outputs: local rank 0, one per machine."""
    return local_rank() == 0


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def start(settings: TrainSettings) -> bool:
    """Make this stage process data-parallel as the params ask. Returns True where this process
    was the launcher: it ran the same command under torchrun, every rank finished, nothing is left
    to do. Returns False where this process should compute: the only one, or one rank of several
    (its process group then joined)."""
    wanted = settings.processes * settings.nodes
    if under_torchrun():
        actual = int(os.environ["WORLD_SIZE"])
        if actual != wanted:
            raise LureError(f"train.processes x train.nodes is {settings.processes} x {settings.nodes} = {wanted}, "
                            f"but this stage runs under torchrun with {actual} processes: set train.processes "
                            f"and train.nodes in the params file so that DVC tracks them")
        if actual > 1 and not dist.is_initialized():
            join(settings)
        return False
    if wanted == 1:
        return False
    launch(settings)
    return True


def join(settings: TrainSettings) -> None:
    """Join the stage's process group as one rank: NCCL between GPUs, one GPU per local rank;
    gloo on the CPU."""
    global _store
    cuda = pick_device(settings).type == "cuda"
    if cuda:
        if local_rank() >= torch.cuda.device_count():
            raise LureError(f"train.processes is {settings.processes}, but this machine has "
                            f"{torch.cuda.device_count()} GPU(s): one process per GPU")
        torch.cuda.set_device(local_rank())
    dist.init_process_group("nccl" if cuda else "gloo")
    atexit.register(_leave)
    _store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                           timeout=datetime.timedelta(seconds=30))


def launch(settings: TrainSettings) -> None:
    """Run this process's command again as `settings.processes` ranks per node under torchrun
    (torch.distributed.run, the launcher itself); a failure of any rank stops them all and ends
    here as one LureError."""
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous import RendezvousError

    main = sys.modules["__main__"]
    module = getattr(main.__spec__, "name", None) if getattr(main, "__spec__", None) else None
    command = ["--module", module] if module else [sys.argv[0]]
    options = [f"--nnodes={settings.nodes}", f"--nproc-per-node={settings.processes}", "--max-restarts=0"]
    if settings.nodes == 1:
        options.append("--standalone")
    else:
        endpoint = os.environ.get(RENDEZVOUS_ENV)
        if not endpoint:
            raise LureError(f"train.nodes is {settings.nodes}: set {RENDEZVOUS_ENV}=host:port (a free port on node 0) "
                            f"on every node, then run the same `dvc repro` on each")
        # the same id on every node for the same stage: a node at another stage does not join it
        run_id = hashlib.sha1(" ".join([*command, *sys.argv[1:]]).encode()).hexdigest()[:16]
        options += ["--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}", f"--rdzv-id={run_id}",
                    f"--rdzv-conf=join_timeout={RENDEZVOUS_WAIT_S},read_timeout={RENDEZVOUS_WAIT_S}"]
    # torchrun would set 1 thread per process, and say so; on the CPU the ranks share the cores
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // settings.processes)))
    # the agent's own lines on a failure (which signal went to which pid) say less than ours below
    logging.getLogger("torch.distributed.elastic.multiprocessing.api").setLevel(logging.CRITICAL)
    try:
        torchrun.run(torchrun.parse_args([*options, *command, *sys.argv[1:]]))
    except ChildFailedError as err:
        # the rank that failed first: one that exited by itself, else one the agent stopped (a signal);
        # never one that stopped because another failed (STOPPED)
        rank_, failure = min(err.failures.items(),
                             key=lambda f: (f[1].exitcode == STOPPED, f[1].exitcode < 0, f[0]))
        raise LureError(f"rank {rank_} of {settings.processes * settings.nodes} failed (exit status "
                        f"{failure.exitcode}), and every rank stopped; its message is above"
                        + (" (or on another node)" if settings.nodes > 1 else "")) from None
    except RendezvousError as err:
        raise LureError(f"the nodes did not meet at {os.environ.get(RENDEZVOUS_ENV)} ({type(err).__name__}: "
                        f"{err}): is every node running the same stage, with the same data and cache?") from None


def _leave() -> None:
    """At exit: leave the process group, unless failing, where closing the connections first
    would make the others fail before this rank's own failure is seen."""
    if not _failing and dist.is_initialized():
        dist.destroy_process_group()


def first_to_fail() -> bool:
    """Leave word in torchrun's store that this rank failed; whether it was the first to. Its
    error is then the run's (printed once), every later one a consequence (a closed connection, a
    collective cut short, or the same error met by every rank). True in a single process."""
    global _failing
    _failing = True
    if _store is None:
        return True
    try:
        return _store.compare_set(_FAILED, "", str(rank()).encode()) == str(rank()).encode()
    except Exception:  # the store's host (torchrun's agent) is gone: the others are stopping already
        return False


# --- collectives that are no-ops in a single process ---------------------------------------------


def all_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of `tensor` over the ranks, in place (returned)."""
    if world_size() > 1:
        dist.all_reduce(tensor)
    return tensor


def shard(n: int) -> slice:
    """This rank's contiguous part of n items (parts differ in size by at most one)."""
    world, r = world_size(), rank()
    return slice(n * r // world, n * (r + 1) // world)


def check_same(what: str, tensors: dict[str, torch.Tensor], values: object = None) -> None:
    """Fail unless every rank holds the same `tensors` (bit for bit) and `values`."""
    if world_size() == 1:
        return
    digest = hashlib.sha256(repr(values).encode())
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    digests: list[str | None] = [None] * world_size()
    dist.all_gather_object(digests, digest.hexdigest())
    if len(set(digests)) > 1:
        differ = [r for r, d in enumerate(digests) if d != digests[0]]
        raise LureError(f"{what} differs between the ranks (rank {differ[0]} and rank 0): GPUs in benchmark mode "
                        f"(train.deterministic: false) or of different models may compute it differently")


# --- the model under DDP -------------------------------------------------------------------------


def data_parallel(model: nn.Module, device: torch.device) -> nn.Module:
    """`model`, BatchNorm synchronised (in place), wrapped in DDP: its forward averages the
    gradients over the ranks in backward. The caller keeps updating `model`'s own parameters."""
    from torch.nn.parallel import DistributedDataParallel

    # a conv with one input channel (grayscale) has a size-1 dimension, whose stride is arbitrary:
    # DDP warns that its gradient's strides differ from its bucket's, which costs nothing here
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    # buffers (BatchNorm's running statistics) stay equal on every rank by construction: no broadcast
    # at every forward (forward_sync_buffers in newer torch; broadcast_buffers in older, deprecated since)
    options = inspect.signature(DistributedDataParallel).parameters
    no_sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in options else {"broadcast_buffers": False}
    if device.type == "cuda":
        nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DistributedDataParallel(model, device_ids=[device], **no_sync)
    for module in model.modules():
        if type(module) is nn.BatchNorm2d:  # becomes its subclass: same parameters and buffers, same isinstance
            module.__class__ = GlooBatchNorm2d
    return DistributedDataParallel(model, **no_sync)


class GlooBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are the global batch's, summed over the ranks
    (differentiably: the backward sums the statistics' gradients over the ranks too), as torch's
    SyncBatchNorm computes them on CUDA. The mean first, then the variance around it (two passes,
    as accurate as one process's); running statistics updated as F.batch_norm updates them
    (unbiased variance). Also handles a rank with no images in the batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or world_size() == 1:
            return super().forward(x)
        dims, shape = [0, 2, 3], (1, -1, 1, 1)
        x32 = x.to(torch.promote_types(x.dtype, torch.float32))  # statistics in float32 at least (bf16 input)
        count = torch.tensor([float(x.numel() // x.shape[1])], device=x.device)
        sums = SumOverRanks.apply(torch.cat([x32.sum(dims), count]))
        count = sums[-1].detach()
        mean = sums[:-1] / count
        centred = x32 - mean.view(shape)
        var = SumOverRanks.apply(centred.square().sum(dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (count / (count - 1).clamp_min(1)), alpha=m)
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


class SumOverRanks(torch.autograd.Function):
    """y = the sum of x over the ranks; the gradient of x is the sum of y's gradients over the
    ranks (each rank's loss depends on every rank's x through y)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return all_sum(x.clone())

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return all_sum(grad.clone())
