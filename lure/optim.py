"""The optimisers a chunk trains with (train.optimizer), and what they carry from chunk to chunk.

SGD, Adam and AdamW are PyTorch's update rules written out with its foreach ops, as
torch.optim's multi-tensor implementations apply them: constructing a torch.optim optimiser
imports torch._dynamo, 1.05 s per process on a 2-core machine (measured), a large part of a
small stage. tests/test_optim.py checks each against torch.optim, step by step.

An optimiser's state is its per-entry buffers by kind ("momentum" for SGD; "exp_avg" and
"exp_avg_sq" for Adam) and, for Adam, each parameter's step count ("step"), all by parameter
name: a checkpoint carries it into the next chunk, and a method that resets entries of a
parameter clears their buffers (`clear_entries`).
"""

from __future__ import annotations

import torch
from torch import nn

from lure.config import TrainSettings

State = dict[str, dict[str, torch.Tensor]]  # kind -> parameter name -> tensor


class Optimizer:
    """What the training loop and the methods use of an optimiser."""

    kinds: tuple[str, ...] = ()  # its per-entry buffers

    def __init__(self, named_params: list[tuple[str, nn.Parameter]], lr: float, state: State | None) -> None:
        self.names = [n for n, _ in named_params]
        self.params = [p for _, p in named_params]
        self.lr = lr
        state = state or {}
        self.state: State = {kind: {n: carried(state, kind, n, p) for n, p in named_params} for kind in self.kinds}

    def step(self) -> None:
        raise NotImplementedError

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def live(self) -> tuple[list[int], list[torch.Tensor], list[torch.Tensor]]:
        """The positions, parameters and gradients of the parameters with a gradient: the others are
        skipped, as torch.optim skips them."""
        positions = [i for i, p in enumerate(self.params) if p.grad is not None]
        params = [self.params[i] for i in positions]
        return positions, params, [p.grad for p in params]

    def buffers(self, kind: str) -> list[torch.Tensor]:
        return [self.state[kind][n] for n in self.names]

    def carried_state(self) -> State:
        """A CPU copy of the state, to carry into the next chunk."""
        return {kind: {n: t.detach().cpu().clone() for n, t in by_name.items()} for kind, by_name in self.state.items()}

    def reset(self) -> None:
        """As a new optimiser of the same settings (a fresh optimiser)."""
        for by_name in self.state.values():
            for t in by_name.values():
                t.zero_()


def carried(state: State, kind: str, name: str, p: torch.Tensor) -> torch.Tensor:
    """A buffer carried from the previous chunk, on p's device, or a new one of zeros. Step counts
    stay on the CPU, as torch.optim keeps them, so that the bias corrections wait for no GPU."""
    device = torch.device("cpu") if kind == "step" else p.device
    if name in state.get(kind, {}):
        return state[kind][name].to(device).clone()
    return torch.zeros(()) if kind == "step" else torch.zeros_like(p)


class SGD(Optimizer):
    """SGD with momentum and weight decay, PyTorch's update rule (dampening 0, no Nesterov):
    g <- grad + wd * theta;  buf <- momentum * buf + g;  theta <- theta - lr * buf."""

    kinds = ("momentum",)

    def __init__(self, named_params, lr: float, momentum: float, weight_decay: float, state: State | None = None):
        super().__init__(named_params, lr, state)
        self.momentum, self.weight_decay = momentum, weight_decay

    @torch.no_grad()
    def step(self) -> None:
        live, params, grads = self.live()
        if not live:
            return
        buffers = [self.buffers("momentum")[i] for i in live]
        if self.weight_decay:
            torch._foreach_add_(grads, params, alpha=self.weight_decay)
        torch._foreach_mul_(buffers, self.momentum)
        torch._foreach_add_(buffers, grads)
        torch._foreach_add_(params, buffers, alpha=-self.lr)


class Adam(Optimizer):
    """Adam (Kingma & Ba), PyTorch's update rule without amsgrad; `decoupled` is AdamW (Loshchilov &
    Hutter): the weight decay shrinks the weights by lr * wd instead of joining the gradient."""

    kinds = ("exp_avg", "exp_avg_sq", "step")

    def __init__(self, named_params, lr: float, betas: tuple[float, float], eps: float, weight_decay: float,
                 decoupled: bool, state: State | None = None):
        super().__init__(named_params, lr, state)
        (self.beta1, self.beta2), self.eps, self.weight_decay, self.decoupled = betas, eps, weight_decay, decoupled

    @torch.no_grad()
    def step(self) -> None:
        live, params, grads = self.live()
        if not live:
            return
        exp_avgs = [self.buffers("exp_avg")[i] for i in live]
        exp_avg_sqs = [self.buffers("exp_avg_sq")[i] for i in live]
        steps = [self.buffers("step")[i] for i in live]
        torch._foreach_add_(steps, 1)
        if self.weight_decay:
            if self.decoupled:
                torch._foreach_mul_(params, 1 - self.lr * self.weight_decay)
            else:
                grads = torch._foreach_add(grads, params, alpha=self.weight_decay)
        torch._foreach_lerp_(exp_avgs, grads, 1 - self.beta1)
        torch._foreach_mul_(exp_avg_sqs, self.beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - self.beta2)
        counts = [float(s) for s in steps]  # CPU tensors
        step_sizes = [(self.lr / (1 - self.beta1 ** n)) * -1 for n in counts]
        bias_correction2_sqrt = [(1 - self.beta2 ** n) ** 0.5 for n in counts]
        denominators = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denominators, bias_correction2_sqrt)
        torch._foreach_add_(denominators, self.eps)
        torch._foreach_addcdiv_(params, exp_avgs, denominators, step_sizes)


def make_optimizer(named_params: list[tuple[str, nn.Parameter]], settings: TrainSettings,
                   state: State | None = None) -> Optimizer:
    """train.optimizer with the chunk's settings, continuing from the carried `state` (if any)."""
    if settings.optimizer == "sgd":
        return SGD(named_params, settings.lr, settings.momentum, settings.weight_decay, state)
    return Adam(named_params, settings.lr, tuple(settings.betas), settings.eps, settings.weight_decay,
                decoupled=settings.optimizer == "adamw", state=state)


@torch.no_grad()
def clear_entries(state: State, name: str, index: torch.Tensor, dim: int = 0) -> None:
    """Zero the buffers of parameter `name` at `index` along `dim` (its step count is the
    parameter's, and stays)."""
    for kind, by_name in state.items():
        if kind != "step" and name in by_name:
            by_name[name].index_fill_(dim, index.to(by_name[name].device), 0.0)
