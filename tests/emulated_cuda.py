"""CUDA's device rules on a machine without a GPU: the GPU path's bugs found on every CI run.

A tensor "on cuda" is an ordinary CPU tensor whose storage carries a mark. A TorchDispatchMode sees
every aten op, carries the mark from inputs to outputs, and applies the rules a real GPU applies
(the first five raise there too; the last one only warns there, under `warn_only=True`, and fails
here):

- a device mismatch: an op that mixes cuda tensors with CPU tensors that are not 0-dim scalars;
- a CPU `torch.Generator` used for a draw on cuda;
- `.numpy()` of a cuda tensor;
- a cuda index into a CPU tensor;
- an op with no deterministic CUDA kernel, run while deterministic algorithms are on (torch's own
  list, `torch.use_deterministic_algorithms`'s docstring: the operations that throw);
- cuBLAS first used before CUBLAS_WORKSPACE_CONFIG is set, in a process that later asks for
  deterministic algorithms: PyTorch reads the variable once, at its first cuBLAS call, so a later
  setting does not make cuBLAS deterministic.

It also counts what makes the host wait for the GPU (`syncs`): a copy to the host, `.item()`,
`bool()` of a tensor, `.tolist()`, an op whose output size depends on the data (`nonzero`, a
boolean mask). A loop that waits once per batch shows up as a count that grows with the batches.

The Python accessors (`.device`, `.is_cuda`, `.to()`, `.cpu()`, `.cuda()`, `.pin_memory()`) behave as on
CUDA, `torch.cuda` reports one device, and `torch.autocast("cuda", dtype)` runs as CPU autocast with
that dtype. Not emulated: torch.compile, NCCL, cuDNN's algorithm choice, memory limits, streams.

    with emulated_cuda() as rules:          # in a test (the `device` fixture's "emulated-cuda")
        ...
        assert not rules.violations

A process started with LURE_EMULATED_CUDA=1 and tests/emulated_cuda_site on PYTHONPATH (a stage
that DVC runs) installs it when it first imports torch, and writes what it found, one JSON line a
finding, to $LURE_EMULATED_CUDA_REPORT.
"""

from __future__ import annotations

import json
import os
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

CUDA = torch.device("cuda", 0)
# where the project's own frames are: this repository, and the copy a test runs DVC in
PROJECTS = tuple({str(Path(__file__).resolve().parents[1]) + os.sep, os.getcwd() + os.sep})
_MARK = "_lure_emulated_cuda"
_PINNED = "_lure_emulated_pinned"

# aten ops that throw under deterministic algorithms on CUDA (torch.use_deterministic_algorithms)
NONDETERMINISTIC = {
    "avg_pool3d_backward", "_adaptive_avg_pool2d_backward", "_adaptive_avg_pool3d_backward",
    "adaptive_max_pool2d_backward", "fractional_max_pool2d_backward", "fractional_max_pool3d_backward",
    "max_unpool2d", "max_unpool3d", "upsample_linear1d_backward", "upsample_bilinear2d_backward",
    "upsample_bicubic2d_backward", "upsample_trilinear3d_backward", "_upsample_bilinear2d_aa_backward",
    "_upsample_bicubic2d_aa_backward", "reflection_pad1d_backward", "reflection_pad2d_backward",
    "reflection_pad3d_backward", "nll_loss2d_forward", "_ctc_loss_backward", "put_", "put", "histc",
    "grid_sampler_2d_backward", "grid_sampler_3d_backward",
}  # and, as called, scatter_reduce, median and bincount: _without_deterministic_kernel
# aten ops that run on cuBLAS
CUBLAS = {"mm", "addmm", "bmm", "baddbmm", "addbmm", "mv", "addmv", "dot", "vdot", "_addmm_activation",
          "linalg_solve", "_linalg_solve_ex", "linalg_lstsq", "linalg_inv_ex", "_linalg_svd", "_linalg_eigh",
          "linalg_qr", "linalg_cholesky_ex", "triangular_solve", "linalg_solve_triangular"}
# ops that take a CPU 0-dim tensor as the value to write into a cuda tensor (as elementwise ops do)
SCALAR_VALUE_OPS = {"fill", "fill_", "masked_fill", "masked_fill_", "index_fill", "index_fill_"}
# ops whose output size depends on the data: the host waits to learn it
DATA_DEPENDENT = {"nonzero", "masked_select", "_unique2", "unique_dim", "unique_consecutive"}


def _without_deterministic_kernel(name: str, args: tuple, kwargs: dict) -> bool:
    """Whether the op, as called, is one torch's docs list as throwing on CUDA under deterministic
    algorithms."""
    if name.startswith("scatter_reduce"):
        return args[4] not in ("sum", "mean")
    if name in ("median", "nanmedian"):
        return len(args) > 1  # the .dim overloads, which return indices too
    if name == "bincount":
        return (len(args) > 1 and args[1] is not None) or kwargs.get("weights") is not None
    return name in NONDETERMINISTIC


def _written(func, args: tuple, kwargs: dict) -> list[torch.Tensor]:
    """The tensors the op writes into: self for an in-place op, out= (its schema says which)."""
    values = [*args, *(kwargs.get(a.name) for a in func._schema.arguments[len(args):])]
    return [v for a, v in zip(func._schema.arguments, values)
            if a.alias_info is not None and a.alias_info.is_write and isinstance(v, torch.Tensor)]


class CudaRuleBroken(RuntimeError):
    """What a real GPU would raise (or, for the warnings, what fails here)."""


@dataclass
class Finding:
    kind: str
    detail: str
    stack: list[str]

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail} at {' <- '.join(reversed(self.stack[-3:]))}"


@dataclass
class Rules:
    """What one emulation found: the rules broken, and the waits for the GPU."""

    violations: list[Finding] = field(default_factory=list)
    syncs: list[Finding] = field(default_factory=list)
    cublas_configured_at_first_use: bool | None = None  # None until cuBLAS is first used
    report: Path | None = None
    counting: bool = True  # off while a copy on the device is made through the host (deepcopy)

    def broken(self, kind: str, detail: str, raise_: bool = True) -> None:
        finding = Finding(kind, detail, project_stack())
        self.violations.append(finding)
        self._write(finding)
        if raise_:
            raise CudaRuleBroken(f"[emulated cuda] {finding}")

    def waited(self, why: str) -> None:
        if self.counting:
            self.syncs.append(Finding("sync", why, project_stack()))

    def _write(self, finding: Finding) -> None:
        if self.report:
            with self.report.open("a") as f:
                f.write(json.dumps({"pid": os.getpid(), **finding.__dict__}) + "\n")


def project_stack() -> list[str]:
    """The frames of the project's own code (lure/, stages/, tests/), innermost last."""
    frames = []
    for frame, line in traceback.walk_stack(None):
        name = frame.f_code.co_filename
        root = next((r for r in PROJECTS if name.startswith(r)), None)
        if root and "/.venv/" not in name and not name.endswith("emulated_cuda.py"):
            frames.append(f"{name.removeprefix(root)}:{line} {frame.f_code.co_name}")
    return frames[::-1]


def on_cuda(t) -> bool:
    return isinstance(t, torch.Tensor) and getattr(_storage(t), _MARK, False)


def _storage(t: torch.Tensor):
    try:
        return t.untyped_storage()
    except (RuntimeError, NotImplementedError):  # no storage (sparse, meta)
        return None


def _mark(t, cuda: bool = True):
    storage = _storage(t) if isinstance(t, torch.Tensor) else None
    if storage is not None:
        setattr(storage, _MARK, cuda)
    return t


def _pinned(t: torch.Tensor) -> bool:
    return bool(getattr(_storage(t), _PINNED, False))


def _wants_cuda(device) -> bool:
    return device is not None and (isinstance(device, int) or torch.device(device).type == "cuda")


class _Mode(TorchDispatchMode):
    def __init__(self, rules: Rules) -> None:
        super().__init__()
        self.rules = rules

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        name = func.overloadpacket.__name__
        to_cuda = _wants_cuda(kwargs.get("device"))
        if to_cuda:
            kwargs["device"] = torch.device("cpu")
        if kwargs.get("pin_memory"):
            kwargs["pin_memory"] = False
        tensors = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
        marked = [on_cuda(t) for t in tensors]
        cuda = to_cuda or any(marked)

        if name == "_to_copy":
            # C++ passes the real device (the CPU) whatever the tensor's mark, e.g. in autograd: the
            # copy keeps the source's mark, and the Python .cpu()/.to("cpu") unmark theirs themselves
            if on_cuda(args[0]) and not to_cuda and kwargs.get("non_blocking"):
                self.rules.broken("non_blocking copy to the host", "read before the GPU has finished it, it "
                                  "is a race: copy with non_blocking=False, or synchronize first")
            if to_cuda and not on_cuda(args[0]) and kwargs.get("non_blocking") and not _pinned(args[0]):
                self.rules.waited("a non_blocking copy to the device from pageable memory (the host waits)")
            return _mark(func(*args, **kwargs), to_cuda or on_cuda(args[0]))
        if name == "copy_":
            destination, source = args[0], args[1]
            if on_cuda(source) and not on_cuda(destination):
                self.rules.waited(f"copy to the host {tuple(source.shape)}")
            return func(*args, **kwargs)
        if name in ("detach", "alias", "lift_fresh", "lift_fresh_copy", "_local_scalar_dense"):
            out = func(*args, **kwargs)
            if name == "_local_scalar_dense" and cuda:
                self.rules.waited("a tensor's value read on the host (.item(), bool(), int(), float())")
                return out
            return _mark(out, cuda) if cuda else out

        written = _written(func, args, kwargs)
        self.check_devices(func, name, args, tensors, written)
        if cuda:
            self.check_cuda_op(func, name, args, kwargs)
        out = func(*args, **kwargs)
        if written:  # in place, or into out=: the outputs are those tensors, which keep their own device
            return out
        if "device" in kwargs and (name.endswith("_like") or name.startswith("new_")) and name != "new_empty_strided":
            # zeros_like(x, device="cpu"), x.new_zeros(2, device="cpu"): the device asked for. (Autograd
            # makes a gradient with new_empty_strided and the tensor's real device, the CPU: it keeps self's)
            cuda = to_cuda
        if cuda:
            tree_map(lambda o: _mark(o) if isinstance(o, torch.Tensor) else o, out)
        return out

    def check_devices(self, func, name, args, tensors, written) -> None:
        if name in ("index", "_unsafe_index", "index_put", "index_put_", "_index_put_impl_", "_unsafe_index_put"):
            # CUDA takes CPU indices into a cuda tensor, not the other way round
            self_cuda = on_cuda(args[0])
            indices = [i for i in args[1] if isinstance(i, torch.Tensor)]
            if not self_cuda and any(on_cuda(i) for i in indices):
                self.rules.broken("cuda index into a CPU tensor", str(func))
            if self_cuda and any(i.dtype == torch.bool for i in indices):
                self.rules.waited("a boolean mask (its count is read on the host)")
            if name != "index" and name != "_unsafe_index" and args[2].dim() > 0 and on_cuda(args[2]) != self_cuda:
                self.rules.broken("device mismatch", f"{func}: values and self on different devices")
            return
        if not any(on_cuda(t) for t in tensors):
            return
        # a CPU 0-dim tensor is a scalar argument of an elementwise op, never its output
        scalars_allowed = torch.Tag.pointwise in func.tags or name in SCALAR_VALUE_OPS
        cpu = [tuple(t.shape) for t in tensors if not on_cuda(t) and not (
            scalars_allowed and t.dim() == 0 and not any(t is w for w in written))]
        if cpu:
            self.rules.broken("device mismatch", f"{func}: cuda tensors with CPU tensors of shape {cpu[:3]}")

    def check_cuda_op(self, func, name, args, kwargs) -> None:
        generator = kwargs.get("generator") or next((a for a in args if isinstance(a, torch.Generator)), None)
        if generator is not None and generator.device.type != "cuda":
            self.rules.broken("CPU generator for a cuda draw", f"{func}: expected a 'cuda' generator")
        deterministic = torch.are_deterministic_algorithms_enabled()
        if deterministic and _without_deterministic_kernel(name, args, kwargs):
            self.rules.broken("no deterministic CUDA kernel", f"{func} under deterministic algorithms",
                              raise_=not torch.is_deterministic_algorithms_warn_only_enabled())
        if name in CUBLAS:
            if self.rules.cublas_configured_at_first_use is None:
                self.rules.cublas_configured_at_first_use = bool(os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
            if deterministic and not self.rules.cublas_configured_at_first_use:
                self.rules.broken("cuBLAS not deterministic", f"{func}: cuBLAS was first used before "
                                  "CUBLAS_WORKSPACE_CONFIG was set, so deterministic algorithms cannot make it "
                                  "deterministic", raise_=False)
        if name in DATA_DEPENDENT:
            self.rules.waited(f"{name} (its output size is read on the host)")


# --- the Python side: what a tensor says of itself, moves between devices, torch.cuda ----------


class _Patches:
    """Attributes replaced while the emulation runs, and restored after."""

    def __init__(self) -> None:
        self.saved: list[tuple[object, str, object]] = []

    def set(self, owner, name: str, value) -> None:
        self.saved.append((owner, name, owner.__dict__.get(name, _MISSING) if isinstance(owner, type)
                           else getattr(owner, name, _MISSING)))
        setattr(owner, name, value)

    def restore(self) -> None:
        for owner, name, value in reversed(self.saved):
            if value is _MISSING:
                delattr(owner, name)
            else:
                setattr(owner, name, value)


_MISSING = object()


def _patch_tensor(patches: _Patches, rules: Rules) -> None:
    T = torch.Tensor
    real_device = torch._C.TensorBase.device.__get__
    to, numpy, tolist, deepcopy, new_tensor = T.to, T.numpy, T.tolist, T.__deepcopy__, T.new_tensor

    def host_copy(t: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if kwargs.get("non_blocking"):
            rules.broken("non_blocking copy to the host", "read before the GPU has finished it, it is a race: "
                         "copy with non_blocking=False, or synchronize first")
        rules.waited(f"copy to the host {tuple(t.shape)}")
        return _mark(to(t, *args, **{**kwargs, "copy": True}), False)

    def to_(self, *args, **kwargs):
        if args and isinstance(args[0], torch.Tensor):  # .to(other): other's device and dtype
            return to_(self, args[0].device, args[0].dtype, *args[1:], **kwargs)
        kwargs = dict(kwargs)
        copy = kwargs.pop("copy", False)
        if len(args) == 4:  # .to(device, dtype, non_blocking, copy)
            *args, copy = args
        device, dtype, non_blocking, memory_format = torch._C._nn._parse_to(*args, **kwargs)
        options = {"non_blocking": non_blocking, "copy": copy}
        if memory_format is not None:
            options["memory_format"] = memory_format
        dtype = dtype or self.dtype
        if device is None or (device.type == "cuda") == on_cuda(self):
            return to(self, dtype, **options)
        if device.type == "cuda":
            return to(self, CUDA, dtype, **options)
        return host_copy(self, "cpu", dtype, **{k: v for k, v in options.items() if k != "copy"})

    def numpy_(self, *, force=False):
        if on_cuda(self):
            rules.broken(".numpy() of a cuda tensor", f"{tuple(self.shape)} {self.dtype}: use .cpu() first")
        return numpy(self, force=force)

    def tolist_(self):
        if on_cuda(self):
            rules.waited(".tolist()")
        return tolist(self)

    def pin_memory_(self, device=None):
        if on_cuda(self):
            rules.broken("pin_memory of a cuda tensor", f"{tuple(self.shape)}")
        pinned = self.clone()
        setattr(pinned.untyped_storage(), _PINNED, True)
        return pinned

    def deepcopy_(self, memo):  # a storage's copy: on the device there, unmarked here
        rules.counting, counting = False, rules.counting
        try:
            return _mark(deepcopy(self, memo), on_cuda(self))
        finally:
            rules.counting = counting

    def new_tensor_(self, data, *args, **kwargs):
        out = new_tensor(self, data, *args, **kwargs)
        return to_(out, CUDA) if on_cuda(self) and kwargs.get("device") is None else out

    patches.set(T, "device", property(lambda self: CUDA if on_cuda(self) else real_device(self)))
    patches.set(T, "is_cuda", property(on_cuda))
    patches.set(T, "is_cpu", property(lambda self: not on_cuda(self)))
    patches.set(T, "get_device", lambda self: 0 if on_cuda(self) else -1)
    patches.set(T, "to", to_)
    patches.set(T, "cpu", lambda self, memory_format=torch.preserve_format:
                host_copy(self, "cpu", memory_format=memory_format) if on_cuda(self) else self)
    patches.set(T, "cuda", lambda self, device=None, non_blocking=False, memory_format=torch.preserve_format:
                to_(self, CUDA, non_blocking=non_blocking, memory_format=memory_format))
    patches.set(T, "numpy", numpy_)
    patches.set(T, "tolist", tolist_)
    patches.set(T, "pin_memory", pin_memory_)
    patches.set(T, "is_pinned", lambda self, device=None: _pinned(self))
    patches.set(T, "__deepcopy__", deepcopy_)
    patches.set(T, "new_tensor", new_tensor_)


class _Autocast(torch.amp.autocast_mode.autocast):
    """torch.autocast("cuda", dtype) as CPU autocast with the same dtype (fp16 by default, as CUDA's)."""

    def __init__(self, device_type: str, dtype=None, enabled: bool = True, cache_enabled=None) -> None:
        if device_type == "cuda":
            device_type, dtype = "cpu", dtype or torch.float16
        super().__init__(device_type, dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)


def _patch_cuda(patches: _Patches) -> None:
    c = torch.cuda
    for name, value in {
        "_lazy_init": lambda: None, "is_available": lambda: True, "device_count": lambda: 1,
        "current_device": lambda: 0, "set_device": lambda device: None, "synchronize": lambda device=None: None,
        "is_bf16_supported": lambda including_emulation=True: True,
        "get_device_name": lambda device=None: "emulated CUDA device (tests/emulated_cuda.py)",
        "get_device_capability": lambda device=None: (9, 0),
        "mem_get_info": lambda device=None: (70 * 2**30, 80 * 2**30),
        "manual_seed": lambda seed: None, "manual_seed_all": lambda seed: None,
        "max_memory_allocated": lambda device=None: 0, "reset_peak_memory_stats": lambda device=None: None,
        "empty_cache": lambda: None,
    }.items():
        patches.set(c, name, value)
    patches.set(torch, "autocast", _Autocast)
    patches.set(torch.amp, "autocast", _Autocast)


@contextmanager
def emulated_cuda(report: Path | None = None):
    """Run the block as if one CUDA device were there, under CUDA's rules; yields the Rules found.
    The deterministic-algorithms and cuDNN settings and autograd's threads are restored after (the
    CUDA device guard that torch.tensor(..., device="cuda") needs stays registered)."""
    rules = Rules(report=report)
    patches = _Patches()
    deterministic = (torch.are_deterministic_algorithms_enabled(),
                     torch.is_deterministic_algorithms_warn_only_enabled())
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)  # pick_device sets them
    threads = torch._C._is_multithreading_enabled()
    _patch_tensor(patches, rules)
    _patch_cuda(patches)
    torch._C._set_multithreading_enabled(False)  # backward in this thread, under the mode
    lift_cpu_only = torch._C._only_lift_cpu_tensors()
    torch._C._set_only_lift_cpu_tensors(True)  # torch.tensor(data, device="cuda") built on the CPU, then moved
    torch._C._ensureCUDADeviceGuardSet()  # ... under a device guard that needs no driver
    mode = _Mode(rules)
    try:
        with mode:
            yield rules
    finally:
        patches.restore()
        torch._C._set_multithreading_enabled(threads)
        torch._C._set_only_lift_cpu_tensors(lift_cpu_only)
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn


def install_for_process() -> Rules:
    """The emulation for the rest of this process (a stage that DVC runs), findings written to
    $LURE_EMULATED_CUDA_REPORT."""
    global _process_block
    report = os.environ.get("LURE_EMULATED_CUDA_REPORT")
    _process_block = emulated_cuda(Path(report) if report else None)  # held: never left, the process ends in it
    return _process_block.__enter__()


_process_block = None
