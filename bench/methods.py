"""Benchmark: each forgetting method of lure/methods against its authors' code, on the same
model, the same weights and the same batches, in fp32 on the CPU.

The authors' code imports what the project does not install (einops), so this runs in its own
environment, given the official repositories (checkouts, or bare git directories, which are read
with `git archive HEAD`):

    uv venv /tmp/methods-bench -p 3.11
    uv pip install -p /tmp/methods-bench -e . einops
    /tmp/methods-bench/bin/python bench/methods.py \\
        --dash PATH/TO/baekrok/DASH-Direction-Aware-SHrinking \\
        --fire PATH/TO/isaac7778/FIRE \\
        --hare-tortoise PATH/TO/dojeon-ai/Hare-Tortoise

About 8 minutes on 2 cores.

What runs of the authors' code (nothing of it is copied here):
- DASH's utils/train_utils.py: the functions `dash` and `l2_init`, taken out of the file with
  `ast` and run alone (the module imports wandb, its data loaders and models);
- FIRE's vision/interventions (fire, dash, parseval, node_reset/snr), imported as they are, and
  the lines of vision/train.py's training step (its L2 Init and Parseval terms, its update and
  SNR call), taken out of `main` with `ast` and run on our batches;
- Hare & Tortoise's src/trainers/base.py: `BaseTrainer.train` itself, with wandb, tqdm's bars and
  src/common/vis_utils (matplotlib plots for its test(), which is not run) stubbed, on a loader
  that yields the batches our Trainer draws.
Models: lure's small_cnn and resnet18 (the methods that act on any network), the mlp (SNR, whose
units are then the same in both); inputs: scikit-learn's digits (8x8, three channels for the
resnet), the weights moved away from their initial values by a few SGD updates first.
Per method and model: the largest absolute difference between the two results, over every
parameter and buffer (over the loss and every gradient for the two regularisers; over the
per-unit ages, thresholds, histograms and reset decisions for SNR), and whether it is within
--target; with what the method did (`changed`: its largest change of a weight; `penalty`: the
term's value; `resets`), so that an agreement is not that of two no-ops, and, where the target is
missed, `why`. Writes bench/results/methods-cpu.json, which `uv run lure readme` shows in
README.md's `<!-- lure bench methods-cpu -->` block.
"""

from __future__ import annotations

import argparse
import ast
import copy
import hashlib
import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import types
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # Hare & Tortoise's progress bars (read when tqdm is imported)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from common import current_commit  # noqa: E402
from torch import nn  # noqa: E402

from lure.config import ModelSettings, TrainSettings  # noqa: E402
from lure.device import cpu_name, pin_cpu_kernels  # noqa: E402
from lure.images import Images  # noqa: E402
from lure.methods import METHODS, Boundary  # noqa: E402
from lure.models import Network, as_float, build_model, resnet, set_input_stats, small_cnn  # noqa: E402
from lure.train import Hook, Trainer, fit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REPOS = {"dash": "baekrok/DASH-Direction-Aware-SHrinking", "fire": "isaac7778/FIRE",
         "hare_tortoise": "dojeon-ai/Hare-Tortoise"}
CPU = torch.device("cpu")


# --- the official code ---------------------------------------------------------------------------


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


def checkout(repo: Path, scratch: Path, name: str, folders: list[str]) -> tuple[Path, str | None]:
    """A working tree of `repo` (itself, or the `folders` of HEAD of a bare git directory, written
    under `scratch`: a mirror may lack the blobs of large files elsewhere) and its commit (None
    outside git)."""
    try:
        commit = git(repo, "rev-parse", "HEAD")
    except (subprocess.CalledProcessError, OSError):
        return repo, None
    if git(repo, "rev-parse", "--is-bare-repository") != "true":
        return repo, commit
    tree = scratch / name
    tree.mkdir(parents=True)
    archive = subprocess.run(["git", f"--git-dir={repo}", "archive", "HEAD", *folders], capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree, commit


def exec_functions(path: Path, names: list[str], namespace: dict) -> dict:
    """The top-level functions `names` of the file at `path`, executed alone in `namespace`."""
    tree = ast.parse(path.read_text(), str(path))
    nodes = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name in names]
    missing = set(names) - {node.name for node in nodes}
    if missing:
        raise SystemExit(f"{path}: no top-level function {', '.join(sorted(missing))}")
    exec(compile(ast.Module(body=nodes, type_ignores=[]), str(path), "exec"), namespace)
    return namespace


def block_of(path: Path, function: str, first: str, last: str) -> types.CodeType:
    """The statements of `function` in `path` from the assignment to `first` to the one to `last`,
    in the block that holds them, compiled (tracebacks point at the original lines)."""
    tree = ast.parse(path.read_text(), str(path))
    (func,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function]

    def assigns(node: ast.stmt, name: str) -> bool:
        return isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets)

    for node in ast.walk(func):
        body = getattr(node, "body", None)
        if isinstance(body, list):
            starts = [i for i, s in enumerate(body) if assigns(s, first)]
            ends = [i for i, s in enumerate(body) if assigns(s, last)]
            if starts and ends:
                return compile(ast.Module(body=body[starts[0]:ends[-1] + 1], type_ignores=[]), str(path), "exec")
    raise SystemExit(f"{path}: {function} has no block from `{first} = ...` to `{last} = ...`")


def loop_body(path: Path, function: str, target: str) -> types.CodeType:
    """The body of the `for` loop of `function` whose first target is `target`, compiled."""
    tree = ast.parse(path.read_text(), str(path))
    (func,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function]
    for node in ast.walk(func):
        names = [n.id for n in ast.walk(node.target) if isinstance(n, ast.Name)] if isinstance(node, ast.For) else []
        if names and names[0] == target:
            return compile(ast.Module(body=node.body, type_ignores=[]), str(path), "exec")
    raise SystemExit(f"{path}: {function} has no `for {target}...` loop")


class Namespace(dict):
    """A configuration as the authors' code reads it (DotMap, FIRE's Config): keys as attributes,
    nested mappings alike, and ** of a section."""

    def __init__(self, mapping: dict) -> None:
        super().__init__({k: Namespace(v) if isinstance(v, dict) else v for k, v in mapping.items()})

    def __getattr__(self, key: str):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key: str, value) -> None:
        self[key] = value


def load_dash(tree: Path) -> dict:
    from einops import rearrange

    return exec_functions(tree / "utils" / "train_utils.py", ["dash", "l2_init"],
                          {"torch": torch, "nn": nn, "F": F, "copy": copy, "rearrange": rearrange})


def load_fire(tree: Path) -> dict:
    sys.path.insert(0, str(tree / "vision"))
    modules = {name: importlib.import_module(f"interventions.{name}")
               for name in ("fire", "dash", "parseval", "node_reset.snr", "node_reset.redo")}
    train = tree / "vision" / "train.py"
    return {**modules, "train.py": train,
            "get_optimizer": exec_functions(train, ["get_optimizer"], {"torch": torch,
                                                                        "SingleDeviceMuonWithAuxAdam": None})[
                "get_optimizer"],
            "loss_lines": block_of(train, "main", "ce_loss", "loss"),
            "step": loop_body(train, "main", "i_step")}


def load_hare_tortoise(tree: Path):
    """src/trainers/base.py as a module, without what only its test() and logging use."""
    sys.path.insert(0, str(tree))
    wandb = types.ModuleType("wandb")
    wandb.Image = lambda *args, **kwargs: None
    sys.modules.setdefault("wandb", wandb)
    sys.modules["src.common.vis_utils"] = types.ModuleType("src.common.vis_utils")  # matplotlib plots for test()
    trainers = types.ModuleType("src.trainers")  # its __init__ imports dotmap and omegaconf for build_trainer
    trainers.__path__ = [str(tree / "src" / "trainers")]
    sys.modules["src.trainers"] = trainers
    return importlib.import_module("src.trainers.base")


# --- data, models, results --------------------------------------------------------------------------


def digits(channels: int) -> Images:
    """scikit-learn's 1797 digits as the pipeline stores images (uint8 0..255), `channels` copies."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy((d.images * (255 / 16)).round().astype(np.uint8))[:, None]
    return Images(x.expand(-1, channels, -1, -1).contiguous(), torch.from_numpy(d.target).long())


def first(images: Images, n: int, start: int = 0) -> Images:
    return Images(images.x[start:start + n], images.y[start:start + n])


def batches(images: Images, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """In stored order, as floats in [0, 1]."""
    return [(as_float(x), y) for x, y in zip(images.x.split(size), images.y.split(size))]


def new_model(arch: str) -> Network:
    torch.manual_seed(0)
    if arch == "small_cnn":
        return small_cnn(1, 10)
    if arch == "resnet18":
        return resnet("resnet18", 3, 10)
    return build_model(ModelSettings(arch="mlp"), 1, 10, (8, 8))


def starting_point(arch: str, data: Images, updates: int = 8) -> tuple[Network, dict[str, torch.Tensor]]:
    """The model after `updates` SGD updates in train mode (weights and BatchNorm's statistics off
    their initial values), and its initial weights."""
    model = new_model(arch)
    set_input_stats(model, data.x)
    initial = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for x, y in batches(first(data, 64 * updates, start=len(data) - 64 * updates), 64):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval(), initial


def edge(model: Network, initial: dict, replay: Images, new: Images) -> Boundary:
    return Boundary(initial=initial, fresh_model=lambda: new_model("small_cnn"), replay=replay, new=new,
                    generator=torch.Generator().manual_seed(1), run_generator=torch.Generator().manual_seed(2))


def floats(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in state.items() if v.is_floating_point()}


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    if a.keys() != b.keys():
        raise ValueError(f"different entries: {sorted(set(a) ^ set(b))}")
    return max(float((a[k].double() - b[k].double()).abs().max()) if a[k].numel() else 0.0 for k in a)


class Rows:
    def __init__(self, target: float, commits: dict[str, str | None]) -> None:
        self.target, self.commits, self.rows = target, commits, []

    def add(self, method: str, model: str, repo: str, where: str, compared: str, diff: float, note: str = "",
            **extra) -> None:
        row = {"method": method, "model": model, "official": f"{REPOS[repo]}:{where}", "commit": self.commits[repo],
               "compared": compared, "max_abs_diff": diff, "within_target": bool(diff <= self.target),
               "note": note, **extra}
        self.rows.append(row)
        print(f"{method:14s} {model:9s} {row['official']:70s} {diff:.3g}", flush=True)


# --- FIRE and DASH: a change of the weights at a chunk's arrival ------------------------------------


def compare_fire(rows: Rows, fire: dict, arch: str, data: Images) -> None:
    model, initial = starting_point(arch, data)
    theirs, ours = copy.deepcopy(model), copy.deepcopy(model)
    fire["fire"].fire(theirs, iteration=10)
    METHODS["fire"](iterations=10).forget(ours, edge(ours, initial, data, data))
    rows.add("fire", arch, "fire", "vision/interventions/fire.py:fire", "every parameter and buffer after the "
             "change (10 Newton-Schulz iterations)", max_diff(floats(theirs.state_dict()), floats(ours.state_dict())),
             changed=max_diff(floats(model.state_dict()), floats(ours.state_dict())))


def compare_dash(rows: Rows, official: str, dash, arch: str, data: Images, chunk: int = 128, chunks: int = 3) -> None:
    """Ours on a boundary whose replay is `chunks` chunks of `chunk` images (the official batch: one
    chunk); theirs on the same batches in stored order, the model in eval mode."""
    model, initial = starting_point(arch, data)
    replay = first(data, chunk * chunks)
    ours = copy.deepcopy(model)
    METHODS["dash"](alpha=0.3, min_scale=0.3).forget(ours, edge(ours, initial, replay, first(data, chunk)))
    loader = batches(replay, chunk)

    def run(mode: str) -> nn.Module:
        theirs = copy.deepcopy(model).train(mode == "train")
        if official == "dash":
            args = types.SimpleNamespace(device="cpu", dash_alpha=0.3, dash_lambda=0.3)
            dash(args, theirs, nn.CrossEntropyLoss(), loader)
        else:
            dash(theirs, 0.3, 0.3, loader, nn.CrossEntropyLoss(), "cpu")
        return theirs

    ours_state = floats(ours.state_dict())
    in_train_mode = max_diff(floats(run("train").state_dict()), ours_state)
    where = "utils/train_utils.py:dash" if official == "dash" else "vision/interventions/dash.py:dash"
    rows.add("dash", arch, official, where, f"every parameter and buffer after the shrink (alpha 0.3, lambda 0.3, "
             f"{chunks} batches of {chunk})", max_diff(floats(run("eval").state_dict()), ours_state),
             "both in eval mode: the official function runs on the model in the mode its caller left it (eval in "
             "the official flows, after DASH's evaluate() or FIRE's task.test()), ours always on an eval-mode copy; "
             f"the official on the model in train mode differs from ours by {in_train_mode:.3g} (BatchNorm's batch "
             "statistics in the gradients)", train_mode_max_abs_diff=in_train_mode,
             changed=max_diff(floats(model.state_dict()), ours_state))


# --- L2 Init and Parseval: a term of the loss --------------------------------------------------------


class FireModel:
    """What FIRE's regularisers ask of its model (vision/models/base.py's Model): the parameters by
    name, and which of them belong to a normalisation layer."""

    def __init__(self, net: nn.Module) -> None:
        self.net = net
        norms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm)
        self.norm_names = {f"{m}.{p}" for m, module in net.named_modules() if isinstance(module, norms)
                           for p, _ in module.named_parameters()}

    def named_parameters(self):
        return self.net.named_parameters()

    def is_norm_layer_parameter(self, name: str) -> bool:
        return name in self.norm_names


def ours_loss(method, model: Network, initial: dict, data: Images, x, y) -> torch.Tensor:
    """The loss our Trainer minimises under the method's Penalty hook, on one batch in train mode."""
    trainer = Trainer(model, TrainSettings(device="cpu", precision="fp32"), CPU, 1)
    method.relearning(model, edge(model, initial, data, data)).before_fit(trainer)
    model.train()
    return trainer.objective(model(x), y)


def loss_and_gradients(loss: torch.Tensor, model: nn.Module) -> dict[str, torch.Tensor]:
    model.zero_grad()
    loss.backward()
    return {"loss": loss.detach().reshape(()), **{n: p.grad.detach() if p.grad is not None else torch.zeros_like(p)
                                                  for n, p in model.named_parameters()}}


def fire_loss(fire: dict, model: Network, init_model: Network, cfg: dict, x, y) -> torch.Tensor:
    """FIRE's vision/train.py lines from `ce_loss = ...` to `loss = ...`, on one batch in train mode
    (after the first chunk of a continual run)."""
    model.train()
    namespace = {"torch": torch, "criterion": nn.CrossEntropyLoss(), "outputs": model(x), "labels": y,
                 "model": FireModel(model), "init_model": init_model, "i_iter": 1,
                 "parseval_loss": fire["parseval"].parseval_loss,
                 "cfg": Namespace({"benchmark": "continual", "regen": {"coef": 0.0},
                                   "parseval_reg": {"enable": False, "coef": 0.0}, **cfg})}
    exec(fire["loss_lines"], namespace)
    return namespace["loss"]


def compare_l2_init(rows: Rows, fire: dict, dash: dict, arch: str, data: Images, coefficient: float = 1e-2) -> None:
    model, initial = starting_point(arch, data)
    x, y = batches(first(data, 64), 64)[0]
    init_model = new_model(arch)
    init_model.load_state_dict(initial)
    ours_model = copy.deepcopy(model)
    ours = loss_and_gradients(ours_loss(METHODS["l2_init"](coefficient=coefficient), ours_model, initial, data, x, y),
                              ours_model)
    penalty = float(ours["loss"] - F.cross_entropy(copy.deepcopy(model).train()(x), y).detach())
    theirs_model = copy.deepcopy(model)
    loss = fire_loss(fire, theirs_model, init_model, {"regen": {"coef": 2 * coefficient}}, x, y)
    rows.add("l2_init", arch, "fire", "vision/train.py:main (regen lines)",
             f"loss and every gradient, one batch of 64 (ours: coefficient {coefficient:g}; FIRE: regen coef "
             f"{2 * coefficient:g})", max_diff(loss_and_gradients(loss, theirs_model), ours),
             "FIRE adds coef / 2 x sum ||theta - theta_0||^2 over every parameter: ours with coefficient = coef / 2",
             penalty=penalty)
    # DASH's l2_init: lambda x (sum over modules with a weight of ||W - W_0||)^2 -- another penalty
    dash_model = copy.deepcopy(model).train()
    args = types.SimpleNamespace(train_type="l2_init", l2_init_lambda=coefficient)
    loss = dash["l2_init"](args, dash_model, init_model, F.cross_entropy(dash_model(x), y))
    rows.add("l2_init", arch, "dash", "utils/train_utils.py:l2_init",
             f"loss and every gradient, one batch of 64 (lambda {coefficient:g} both)",
             max_diff(loss_and_gradients(loss, dash_model), ours),
             "not the same penalty, by design (lure/methods/l2_init.py says so): DASH's code adds lambda x (sum over "
             "the modules that have a weight, BatchNorm's included, of ||W - W_0||_F)^2, biases free; ours and the "
             "paper lambda x sum ||theta - theta_0||^2 over every parameter. No coefficient maps one onto the other "
             "(they agree only where a single weight tensor has moved)", penalty=penalty,
             why="another penalty by design: DASH's code adds lambda (sum over layers of ||W - W_0||)^2, weights only "
                 "(BatchNorm's scales included), where ours, as the paper, adds lambda sum ||theta - theta_0||^2 over "
                 "every parameter (FIRE's form, which ours equals)")


def compare_parseval(rows: Rows, fire: dict, arch: str, data: Images, coefficient: float = 1e-3) -> None:
    model, initial = starting_point(arch, data)
    x, y = batches(first(data, 64), 64)[0]
    ours_model = copy.deepcopy(model)
    ours = loss_and_gradients(ours_loss(METHODS["parseval"](coefficient=coefficient), ours_model, initial, data, x, y),
                              ours_model)
    penalty = float(ours["loss"] - F.cross_entropy(copy.deepcopy(model).train()(x), y).detach())
    theirs_model = copy.deepcopy(model)
    loss = fire_loss(fire, theirs_model, model, {"parseval_reg": {"enable": True, "coef": coefficient}}, x, y)
    rows.add("parseval", arch, "fire", "vision/interventions/parseval.py:parseval_loss",
             f"loss and every gradient, one batch of 64 (coefficient {coefficient:g}, scale 1; the loss as "
             "vision/train.py composes it)", max_diff(loss_and_gradients(loss, theirs_model), ours), penalty=penalty)


# --- Hare & Tortoise: the authors' training loop ----------------------------------------------------


class HareTortoiseModel(nn.Module):
    """What BaseTrainer asks of its model: a backbone and a head (ours: normalize + body, head)."""

    def __init__(self, net: Network) -> None:
        super().__init__()
        self.backbone = nn.Sequential(net.normalize, net.body)
        self.head = net.head

    def as_ours(self) -> dict[str, torch.Tensor]:
        """The state dict under our Network's names."""
        rename = {"backbone.0.": "normalize.", "backbone.1.": "body.", "head.": "head."}
        state = {}
        for key, value in self.state_dict().items():
            prefix = next(p for p in rename if key.startswith(p))
            state[rename[prefix] + key[len(prefix):]] = value
        return state


class RecordedLoader:
    """A train loader yielding, epoch after epoch, the batches our Trainer drew."""

    def __init__(self, epochs: list[list[tuple[torch.Tensor, torch.Tensor]]]) -> None:
        self.epochs, self.next = epochs, 0

    def __len__(self) -> int:
        return len(self.epochs[0])

    def __iter__(self):
        self.next += 1
        return iter(self.epochs[self.next - 1])


class Logger:
    """The trainer's logger (wandb), which BaseTrainer calls after every update: with `clear`, it
    clears the model's gradients there (the official loop has no zero_grad: each update's backward
    adds to the gradients of all the updates before it)."""

    def __init__(self, clear: bool) -> None:
        self.clear, self.model = clear, None

    def update_log(self, **logs) -> None:
        if self.clear and self.model is not None:
            for p in self.model.parameters():
                p.grad = None

    def log_to_wandb(self, step: int) -> None:
        pass


def drawn_batches(train: Images, settings: TrainSettings, generator: torch.Generator) -> list[list[tuple]]:
    """The batches Trainer.epoch draws (no augmentation) with a generator in `generator`'s state."""
    replay = torch.Generator()
    replay.set_state(generator.get_state())
    epochs = []
    for _ in range(settings.epochs):
        order = torch.randperm(len(train), generator=replay)
        epochs.append([(as_float(train.x[order[i:i + settings.batch_size]]), train.y[order[i:i + settings.batch_size]])
                       for i in range(0, len(train), settings.batch_size)
                       if min(settings.batch_size, len(train) - i) >= 2])
    return epochs


def compare_hare_tortoise(rows: Rows, base, arch: str, data: Images, epochs: int = 4, reset_every: int = 2,
                          ema: float = 0.9, n: int = 256, batch: int = 32) -> None:
    model, initial = starting_point(arch, data)
    train = first(data, n)
    settings = TrainSettings(device="cpu", precision="fp32", epochs=epochs, batch_size=batch, optimizer="adamw",
                             lr=1e-3, weight_decay=1e-5, betas=(0.9, 0.999), eps=1e-8, schedule="step",
                             lr_milestones=[], warmup=0.1, clip_grad_norm=0.5, select="last", augment="none")
    generator = torch.Generator().manual_seed(3)
    recorded = drawn_batches(train, settings, generator)
    # ours: the pipeline's fit with the method's hook
    ours = copy.deepcopy(model)
    method = METHODS["hare_tortoise"](ema=ema, reset_every=reset_every)
    hook = method.relearning(ours, edge(ours, initial, train, train))
    fit(ours, train, train, settings, generator, None, [hook])
    # theirs: BaseTrainer.train on the same batches; the published trainer config, but for what the comparison sets
    cfg = Namespace({
        "num_tasks": 1, "input_data_ratios": [1.0], "base_epochs": epochs, "base_test_every": -1, "use_amp": False,
        "clip_grad_norm": 0.5, "optimizer_type": "adamw",
        "optimizer": {"lr": 1e-3, "weight_decay": 1e-5, "betas": [0.9, 0.999], "eps": 1e-8},
        "scheduler": {"first_cycle_steps": None, "cycle_mult": 1.0, "max_lr": 1e-3, "min_lr": 1e-3, "warmup_lr": 0.0,
                      "warmup_ratio": 0.1, "gamma": 1.0},
        "early_stop": {"lmbda": 1.0}, "ema": ema, "self_distill": {"lmbda": 0.0, "temp": 1.0},
        "hare_tortoise": {"reset_every": reset_every}, "spectral": {"lmbda": 0.0},
        "regen": {"b_lmbda": 0.0, "h_lmbda": 0.0}, "reinit": {"b_lmbda": 0.0, "h_lmbda": 0.0}, "redo": {"lmbda": 0.0},
        "log_every": 1, "analysis_samples": 512, "num_eigen_vals": 0, "num_singular_vals": 0, "seed": 0})

    def official(clear: bool) -> tuple[dict, dict]:
        logger = Logger(clear)
        trainer = base.BaseTrainer(copy.deepcopy(cfg), CPU, [RecordedLoader(recorded)], None, logger,
                                   HareTortoiseModel(copy.deepcopy(model)))
        logger.model = trainer.model
        trainer.train(0)
        return trainer.model.as_ours(), trainer.target_model.as_ours()

    ours_hare, ours_tortoise = floats(ours.state_dict()), floats(hook.slow)

    def diffs(hare: dict, tortoise: dict) -> dict[str, float]:
        return {"hare": max_diff({k: hare[k] for k in ours_hare}, ours_hare),
                "tortoise": max_diff({k: tortoise[k] for k in ours_tortoise}, ours_tortoise)}

    released = diffs(*official(clear=False))
    hare, tortoise = official(clear=True)
    cleared = diffs(hare, tortoise)
    counts = {k: (float(tortoise[k]), int(hook.slow[k])) for k in tortoise if k.endswith("num_batches_tracked")}
    count_note = ""
    if counts:
        name, (theirs_count, ours_count) = next(iter(counts.items()))
        count_note = (f" Not compared: BatchNorm's num_batches_tracked, which the official EMA turns into a float "
                      f"average (its tortoise's {name}: {theirs_count:.4g}; the hare gets it at each reset), ours "
                      f"leaves as counts (the tortoise's: {ours_count}, what it was at the start); unused with "
                      "BatchNorm's momentum 0.1.")
    what = (f"the hare and the tortoise, every parameter and float buffer, after {epochs} epochs of "
            f"{len(recorded[0])} AdamW updates (lr 1e-3, warm-up 0.1, clip 0.5), ema {ema}, reset_every "
            f"{reset_every} (resets after our epochs 1 and 3)")
    where = "src/trainers/base.py:BaseTrainer.train"
    run = ("BaseTrainer.train itself (use_amp off, test_every -1, every other regulariser 0), on the batches our "
           "Trainer drew.")
    rows.add("hare_tortoise", arch, "hare_tortoise", where, what + "; the official's gradients cleared after every "
             "update", max(cleared.values()), run + " Its loop never zeroes the gradients (no optimizer.zero_grad(): "
             "each backward adds to the sum of every earlier update's gradients of the task); the stub logger it "
             "calls after every update clears them, as our Trainer does, so that the EMA and the resets are what is "
             f"compared (hare {cleared['hare']:.3g}, tortoise {cleared['tortoise']:.3g})." + count_note,
             hare=cleared["hare"], tortoise=cleared["tortoise"], hare_vs_tortoise=max_diff(
                 {k: ours_hare[k] for k in ours_tortoise}, ours_tortoise),
             tortoise_changed=max_diff(floats(model.state_dict()), ours_tortoise))
    rows.add("hare_tortoise", arch, "hare_tortoise", where, what + "; the official as released",
             max(released.values()), run + " As released, its gradients accumulate over the task's updates (no "
             "zero_grad in the loop), ours are each update's own: the training itself differs "
             f"(hare {released['hare']:.3g}, tortoise {released['tortoise']:.3g}).",
             why="the official training loop never zeroes the gradients (no optimizer.zero_grad()): each update "
                 "follows the sum of every gradient of the task so far, ours each update's own; with its gradients "
                 "cleared after every update, the hare and the tortoise equal ours (the row above)",
             hare=released["hare"], tortoise=released["tortoise"])


# --- SNR: FIRE's port, on the mlp ---------------------------------------------------------------------


SNR = {"percentile": 0.98, "threshold_every": 4, "expansion": 2.0, "tau_max": 2000, "window": 64}


def snr_model(data: Images) -> tuple[Network, dict]:
    """The mlp, three units of which can never fire (incoming weights 0, bias -1), so that units are
    due for a reset within a few updates."""
    model, initial = starting_point("mlp", data)
    with torch.no_grad():
        for layer, unit in (("body.1", 3), ("body.1", 17), ("body.3", 5)):
            module = model.get_submodule(layer)
            module.weight[unit], module.bias[unit] = 0.0, -1.0
    return model, initial


def fire_snr(fire: dict, model: Network):
    return fire["node_reset.snr"].SNR(model, period=1, threshold_reset_freq=SNR["threshold_every"],
                                      threshold_percentile=SNR["percentile"],
                                      threshold_expansion_factor=SNR["expansion"], tau_max=SNR["tau_max"],
                                      n_analysis_samples=SNR["window"], device=CPU)


def compare_snr(rows: Rows, fire: dict, data: Images, epochs: int = 2, n: int = 512, batch: int = 16) -> None:
    """Ours trains the mlp under our Trainer; FIRE's SNR watches the same forward passes and keeps
    its own ages, histograms and thresholds (its resets act on a throwaway copy, which nothing
    runs), so both decide on the same activations at every update."""
    import lure.methods.snr as ours_snr

    model, initial = snr_model(data)
    train = first(data, n)
    settings = TrainSettings(device="cpu", precision="fp32", epochs=epochs, batch_size=batch, optimizer="adam",
                             lr=1e-3, weight_decay=0.0, schedule="step", lr_milestones=[], clip_grad_norm=0.5,
                             select="last")
    throwaway = copy.deepcopy(model)
    theirs = fire_snr(fire, model)
    theirs.model = throwaway
    dummy = torch.optim.SGD(throwaway.parameters(), lr=0.0)
    hook = METHODS["snr"](**SNR).relearning(model, edge(model, initial, train, train))
    layers = [u.conv for u in model.units]
    decided: dict[str, list] = {"theirs": [], "ours": []}
    worst = {"ages": 0, "tau": 0, "hist": 0, "decisions": 0}
    module = fire["node_reset.snr"]
    reset_dormant_neurons, recycle = module.reset_dormant_neurons, ours_snr.recycle

    def record_theirs(net, masks):
        decided["theirs"].append({k: set(m.nonzero().flatten().tolist()) for k, m in masks.items() if k in layers})
        return reset_dormant_neurons(net, masks)

    def record_ours(net, units, index, *args):
        decided["ours"][-1][units.conv] = set(index.tolist())
        return recycle(net, units, index, *args)

    class Theirs(Hook):
        def after_step(self, trainer):
            decided["ours"].append({})
            theirs.apply(None, dummy)

    class Compare(Hook):
        def after_step(self, trainer):
            for i, name in enumerate(layers):
                worst["ages"] = max(worst["ages"], int((theirs.ages[name] - hook.ages[i]).abs().max()))
                worst["tau"] = max(worst["tau"], int((theirs.tau[name] - hook.tau[i]).abs().max()))
                worst["hist"] = max(worst["hist"], int((theirs.hist[name] - hook.hist[i]).abs().max()))
                mine, others = decided["ours"][-1].get(name, set()), decided["theirs"][-1].get(name, set())
                worst["decisions"] = max(worst["decisions"], len(mine ^ others))

    module.reset_dormant_neurons, ours_snr.recycle = record_theirs, record_ours
    try:
        fit(model, train, train, settings, torch.Generator().manual_seed(4), None, [Theirs(), hook, Compare()])
    finally:
        module.reset_dormant_neurons, ours_snr.recycle = reset_dormant_neurons, recycle
    resets = sum(len(units) for step in decided["ours"] for units in step.values())
    updates = len(decided["ours"])
    rows.add("snr", "mlp", "fire", "vision/interventions/node_reset/snr.py:SNR",
             f"per unit, after each of {updates} updates: the units reset ({resets} resets in all), ages, thresholds "
             f"and histograms (window {SNR['window']}, thresholds every {SNR['threshold_every']}, percentile "
             f"{SNR['percentile']}, tau_max {SNR['tau_max']})", float(max(worst.values())),
             "on lure's mlp (no BatchNorm: a unit's activation is its layer's output after the ReLU in both); on the "
             "CNNs they differ by design (FIRE watches a convolution's output before BatchNorm, ours after BatchNorm "
             "and the ReLU). Measured only on training forward passes: FIRE's hook also records the evaluation's "
             "passes (task.test, every log_every epochs) into its window, ours only training ones",
             differences=worst, resets=resets)
    compare_snr_reset(rows, fire, data, train, settings)


def compare_snr_reset(rows: Rows, fire: dict, data: Images, train: Images, settings: TrainSettings) -> None:
    """The weights at the first update that resets a unit: FIRE's training step (its vision/train.py
    lines, with its SNR) against our Trainer with ours, from the same model on the same batches."""
    import lure.methods.snr as ours_snr

    model, initial = snr_model(data)
    generator = torch.Generator().manual_seed(4)
    recorded = [b for epoch in drawn_batches(train, settings, generator) for b in epoch]
    # ours, snapshotted after every update, with the units it reset
    ours = copy.deepcopy(model)
    hook = METHODS["snr"](**SNR).relearning(ours, edge(ours, initial, train, train))
    snapshots, resets = [], []
    recycle = ours_snr.recycle

    def record(net, units, index, *args):
        if len(index):
            resets[-1][units.conv] = index.clone()
        return recycle(net, units, index, *args)

    class Snapshot(Hook):
        def before_step(self, trainer):
            resets.append({})

        def after_step(self, trainer):
            snapshots.append((copy.deepcopy(ours.state_dict()), copy.deepcopy(trainer.optimizer.state)))

    ours_snr.recycle = record
    try:
        fit(ours, train, train, settings, generator, None, [hook, Snapshot()])
    finally:
        ours_snr.recycle = recycle
    step = next((i for i, r in enumerate(resets) if r), None)
    if step is None:
        raise SystemExit("snr: no unit was reset; nothing to compare")
    # theirs: FIRE's step lines, update after update, up to that one
    torch.manual_seed(5)  # FIRE's redrawn weights come from the global generator
    theirs = copy.deepcopy(model)
    cfg = Namespace({"benchmark": "continual", "regen": {"coef": 0.0}, "parseval_reg": {"enable": False},
                     "cbp": {"enable": False}, "snr": {"enable": True}, "clip_grad_norm": 0.5, "optimizer": "adam",
                     "lr": 1e-3, "model": "MLP"})
    optimizer = fire["get_optimizer"](theirs, cfg)
    namespace = {"torch": torch, "model": theirs, "device": CPU, "criterion": nn.CrossEntropyLoss(), "cfg": cfg,
                 "init_model": copy.deepcopy(theirs), "i_iter": 1, "optimizer": optimizer, "trainloader": None,
                 "snr_handle": fire_snr(fire, theirs), "parseval_loss": fire["parseval"].parseval_loss,
                 "total": 0, "correct": 0}
    for i_step, (inputs, labels) in enumerate(recorded[:step + 1]):
        namespace.update(i_step=i_step, inputs=inputs, labels=labels)
        exec(fire["step"], namespace)
    state, optimizer_state = snapshots[step]
    ours_state, theirs_state = floats(state), floats(theirs.state_dict())
    redrawn, outgoing = [], []
    for units in ours.units:
        if units.conv in resets[step]:
            index = resets[step][units.conv]
            redrawn += [(f"{units.conv}.weight", (index,)), (f"{units.conv}.bias", (index,))]
            outgoing.append((f"{units.consumer}.weight", (slice(None), index)))
    masked = {k: v.clone() for k, v in ours_state.items()}
    others = {k: v.clone() for k, v in theirs_state.items()}
    for name, where in redrawn:
        masked[name][where], others[name][where] = 0.0, 0.0
    kept = max(float(others[name][where].abs().max()) for name, where in outgoing)
    for name, where in outgoing:
        masked[name][where], others[name][where] = 0.0, 0.0
    elsewhere = max_diff(masked, others)
    for name, where in outgoing:  # back in: the difference in the outgoing weights counts
        others[name][where] = theirs_state[name][where]
    steps = {name: int(optimizer.state[dict(theirs.named_parameters())[name]]["step"])
             for name, _ in redrawn + outgoing if "weight" in name}
    # the units reset there had not fired (their moments are 0): FIRE's reset_opt_state, on entries that did
    weight = theirs.get_submodule(ours.units[0].conv).weight
    moments = optimizer.state[weight]["exp_avg"]
    fired = moments.abs().sum(dim=1) > 0
    before = float(moments[fired].abs().max())
    fire["node_reset.redo"].reset_opt_state(optimizer, {weight: (fired, ...)})
    left = float(optimizer.state[weight]["exp_avg"][fired].abs().max())
    ours_step = int(optimizer_state["step"][outgoing[0][0]])
    rows.add("snr", "mlp", "fire", "vision/interventions/node_reset/snr.py:SNR + redo.py:reset_dormant_neurons",
             f"every parameter after update {step + 1}, the first that resets units "
             f"({', '.join(f'{k}: {v.tolist()}' for k, v in resets[step].items())}), their redrawn incoming weights "
             "and biases apart", max_diff(masked, others),
             f"differs by design where the reset is drawn (ours from a seeded generator, biases 0; FIRE's from "
             f"reset_parameters() on the global generator, biases drawn too), not compared. Elsewhere but the reset "
             f"units' outgoing weights: {elsewhere:.3g}. The outgoing weights: FIRE's reset_dormant_neurons means to "
             f"zero them (`weight.data[:, mask].data.fill_(0)`), but indexing with a boolean mask copies, so they "
             f"keep their values (largest {kept:.3g}); ours zeroes them. Its reset_opt_state likewise leaves Adam's "
             f"moments of the reset entries as they were (`buf[(mask, ...)].zero_()` zeroes a copy: called on the "
             f"{int(fired.sum())} rows of {ours.units[0].conv}.weight whose exp_avg is not 0, it leaves them at "
             f"{left:.3g} of {before:.3g} at most; ours zeroes them) and sets the step count of every tensor it "
             f"touches to 0 ({steps} after the reset; ours keeps {ours_step}). FIRE's step run from vision/train.py "
             "without its per-epoch LR warm-up (both at lr 1e-3)",
             why="FIRE's port does not zero a reset unit's outgoing weights nor its Adam moments, which its code "
                 "means to (redo.py: `weight.data[:, mask].data.fill_(0)` and `buf[(mask, ...)].zero_()` write to the "
                 "copy that indexing with a boolean mask makes), and sets the Adam step count of every tensor it "
                 "touches to 0; ours zeroes them and keeps the count. The rest of the network is equal; the redrawn "
                 "incoming weights are random draws in both (FIRE's biases redrawn, ours 0)",
             elsewhere_max_abs_diff=elsewhere, fire_outgoing_kept_max_abs=kept, fire_exp_avg_left_max_abs=left)


# --- main ---------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dash", type=Path, required=True, help="baekrok/DASH-Direction-Aware-SHrinking")
    parser.add_argument("--fire", type=Path, required=True, help="isaac7778/FIRE")
    parser.add_argument("--hare-tortoise", type=Path, required=True, help="dojeon-ai/Hare-Tortoise")
    parser.add_argument("--models", default="small_cnn,resnet18", help="for fire, dash, l2_init and parseval")
    parser.add_argument("--target", type=float, default=1e-6, help="the largest absolute difference accepted")
    parser.add_argument("--cpu-kernels", choices=["fast", "portable"], default="fast",
                        help="portable: lure.device.pin_cpu_kernels (the same bits on any x86-64 CPU), slower")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "methods-cpu.json")
    args = parser.parse_args()
    if args.cpu_kernels == "portable":
        pin_cpu_kernels()
    with tempfile.TemporaryDirectory() as scratch:
        trees, commits = {}, {}
        for name, path, folders in (("dash", args.dash, ["utils"]), ("fire", args.fire, ["vision"]),
                                    ("hare_tortoise", args.hare_tortoise, ["src"])):
            trees[name], commits[name] = checkout(path.resolve(), Path(scratch), name, folders)
        dash, fire, hare_tortoise = load_dash(trees["dash"]), load_fire(trees["fire"]), \
            load_hare_tortoise(trees["hare_tortoise"])
        rows = Rows(args.target, commits)
        for arch in args.models.split(","):
            data = digits(3 if arch == "resnet18" else 1)
            compare_fire(rows, fire, arch, data)
            compare_dash(rows, "dash", dash["dash"], arch, data)
            compare_dash(rows, "fire", fire["dash"].dash, arch, data)
            compare_l2_init(rows, fire, dash, arch, data)
            compare_parseval(rows, fire, arch, data)
            compare_hare_tortoise(rows, hare_tortoise, arch, data)
        compare_snr(rows, fire, digits(1))
    commit = current_commit()
    result = {"target": args.target, "commit": commit, "machine": {"cpu": cpu_name(), "cores": os.cpu_count()},
              "versions": {"torch": torch.__version__, "python": platform.python_version(),
                           "einops": __import__("einops").__version__},
              "cpu_kernels": args.cpu_kernels, "dtype": "float32", "data": "scikit-learn digits (8x8)",
              "sources": sources(), "rows": rows.rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, allow_nan=False) + "\n")
    missed = [r for r in rows.rows if not r["within_target"]]
    print(f"{len(rows.rows) - len(missed)} of {len(rows.rows)} within {args.target:g}; wrote {args.out}")


def sources() -> dict[str, str]:
    """The sha256 of each method module this compares (and their building blocks), by path: the
    test suite checks that the committed result is of the code as it is."""
    names = ("dash", "fire", "l2_init", "parseval", "penalty", "hare_tortoise", "snr", "units")
    return {f"lure/methods/{n}.py": hashlib.sha256((ROOT / "lure" / "methods" / f"{n}.py").read_bytes()).hexdigest()
            for n in names}


if __name__ == "__main__":
    main()
