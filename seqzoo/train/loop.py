"""The training loop: one model x one task, on one process or under ``torchrun`` (DDP).

    from seqzoo.train import compose, train
    result = train(compose("listops", "s4d", preset="quick"), out="runs/listops-s4d")

What it does, in order:

1. :func:`~seqzoo.train.config.resolve` checks the whole config (no work before that).
2. Distributed set-up from ``torchrun``'s environment (``WORLD_SIZE``, ``RANK``,
   ``LOCAL_RANK``): gloo on CPU, nccl on GPU; ``batch_size`` is global and split evenly.
3. Data: the train/val/test splits of the task (rank 0 generates and caches them first).
   The train order comes from a :class:`ResumableSampler` (``DistributedSampler`` seeded
   by ``seed`` and the epoch, able to start mid-epoch), so the order depends only on the
   seed, never on when the run was interrupted.
4. Model: ``seqzoo.build_model`` (an optional frozen tokenizer front end), AdamW with
   parameter groups: a parameter's ``_optim`` hints (``seqzoo.layer.optim_hint``: lr,
   weight_decay) win; otherwise biases, norms, embeddings and other 1-D parameters get no
   weight decay; the run's ``param_overrides`` (parameter-name globs) come last. Linear warm-up then cosine decay. bf16 autocast on GPU, fp32 on CPU.
   Modules that set ``aux_loss`` (a tensor) during the forward add it to the loss.
5. Checkpoints every ``ckpt_every`` steps and at the end (rank 0; atomic, with a manifest
   of sizes and hashes; see :mod:`seqzoo.train.checkpoint`); a run started again with the
   same folder resumes from the newest checkpoint that verifies (skipping, and naming,
   damaged ones) and ends with the same parameters as a run never interrupted (CPU).
6. Faults (:mod:`seqzoo.train.faults`): SIGTERM / SIGUSR1 finish the current step, write a
   checkpoint and raise :class:`~seqzoo.train.faults.Preempted` (every rank at the same
   step); a step with a non-finite loss or gradient raises
   :class:`~seqzoo.train.faults.NonFiniteError` naming the step and the first such
   parameter (``on_nonfinite: stop``) or has its update skipped (``skip``). Each of these
   events, and each resume, is a line of ``log.jsonl`` with an ``"event"`` key.
7. Evaluation on val every ``eval_every`` steps and on val and test at the end: accuracy
   (over items, or over scored positions for per-position targets) or MSE, with the
   chance level of the split and whether the model beat it (see :func:`chance_verdict`).
   With ``stop_at``, training ends at the first validation that reaches it (the result's
   ``steps`` and ``stopped_at_target`` say where).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as torch_dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler, Subset

from seqzoo.config import ConfigError
from seqzoo.train import checkpoint, faults
from seqzoo.train.config import Plan, RunConfig, resolve

__all__ = ["train", "Dist", "ResumableSampler", "param_groups", "param_hash", "lr_lambda", "evaluate", "length_test_split", "chance_verdict",
           "build_datasets", "build_run_model", "RunExists"]


class RunExists(ConfigError):
    """The output folder holds a run with a different config."""


# ---------------------------------------------------------------------------- processes
@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def on(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.on:
            torch_dist.barrier()


def init_distributed(device_kind: str) -> Dist:
    """Join the process group ``torchrun`` describes in the environment (or run alone)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not torch_dist.is_initialized():
        torch_dist.init_process_group("nccl" if device_kind == "cuda" else "gloo")
    return Dist(rank, world, local)


def _device(cfg: RunConfig, d: Dist) -> torch.device:
    kind = cfg.device
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device = 'cuda' but torch sees no GPU; valid choices here: 'cpu', 'auto'")
        torch.cuda.set_device(d.local_rank)
        return torch.device("cuda", d.local_rank)
    return torch.device("cpu")


def _autocast(cfg: RunConfig, device: torch.device):
    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    if use_bf16:
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


# ---------------------------------------------------------------------------- data
class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` (shuffled by ``seed + epoch``, every rank its own stride of
    one permutation, the tail dropped so all ranks take the same number of items) that can
    start after ``start`` of this rank's items of the epoch: resuming mid-epoch takes
    exactly the items the uninterrupted run would have taken."""

    def __init__(self, dataset, *, num_replicas: int, rank: int, seed: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.start = 0

    def __iter__(self):
        return iter(list(super().__iter__())[self.start:])

    def __len__(self) -> int:
        return max(0, super().__len__() - self.start)


def build_datasets(plan: Plan, root=None, *, progress: bool = True, workers: int | None = None) -> dict[str, Any]:
    """The train, val and test splits of the run's task (generated and cached if needed)."""
    from seqzoo import tasks

    cfg = plan.config
    sizes = {"train": cfg.train_size, "val": cfg.val_size, "test": cfg.test_size}
    out = {}
    for split, size in sizes.items():
        ds = tasks.build(cfg.task, split=split, size=size, root=root, progress=progress, workers=workers,
                         **cfg.task_options)
        if cfg.pad_to_max:
            ds.pad_to = ds.info.seq_len
        out[split] = ds
    return out


def length_test_split(plan: Plan, seq_len: int, root=None):
    """The run's test split generated at sequence length ``seq_len`` (the task's
    ``test_seq_len`` option; ``eval_lengths``), ``test_size`` items, cached like the others."""
    from seqzoo import tasks

    cfg = plan.config
    ds = tasks.build(cfg.task, split="test", size=cfg.test_size, root=root, progress=False,
                     **{**cfg.task_options, "test_seq_len": seq_len})
    if cfg.pad_to_max:
        ds.pad_to = ds.info.seq_len
    return ds


# ---------------------------------------------------------------------------- model and optimiser
def build_run_model(plan: Plan) -> nn.Module:
    import seqzoo

    frontend = None
    if plan.config.tokenizer is not None:
        from seqzoo.quant import Tokenizer

        frontend = Tokenizer.load(plan.config.tokenizer).as_frontend()
    return seqzoo.build_model(frontend=frontend, layer_options=dict(plan.layer_options), **plan.model_options)


_NO_DECAY_MODULES = (nn.LayerNorm, nn.RMSNorm, nn.Embedding, nn.GroupNorm, nn.BatchNorm1d)


def param_groups(model: nn.Module, lr: float, weight_decay: float,
                 overrides: dict[str, dict[str, float | None]] | None = None) -> list[dict[str, Any]]:
    """AdamW groups: a parameter's ``_optim`` hints (lr, weight_decay, ...) win; otherwise
    biases, 1-D parameters and the weights of norms and embeddings get no weight decay.
    ``overrides`` (a run's ``param_overrides``: parameter-name glob -> {lr, weight_decay},
    None standing for the run's ``lr`` / ``weight_decay``) then apply in order, later
    patterns winning; a pattern that matches no parameter is an error (a typo would
    otherwise change nothing silently). Frozen parameters (a tokenizer front end) are left
    out. Groups are keyed by their options, in the order parameters first appear
    (deterministic)."""
    from fnmatch import fnmatchcase

    no_decay: set[int] = set()
    for module in model.modules():
        if isinstance(module, _NO_DECAY_MODULES):
            no_decay.update(id(p) for p in module.parameters(recurse=False))
    overrides = overrides or {}
    run_value = {"lr": lr, "weight_decay": weight_decay}
    matched = dict.fromkeys(overrides, False)
    groups: dict[tuple, dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        wd = 0.0 if (id(p) in no_decay or p.dim() < 2 or name.endswith(".bias")) else weight_decay
        opts = {"lr": lr, "weight_decay": wd, **getattr(p, "_optim", {})}
        for pattern, values in overrides.items():
            if fnmatchcase(name, pattern):
                matched[pattern] = True
                opts.update({k: run_value[k] if v is None else v for k, v in values.items()})
        key = tuple(sorted(opts.items()))
        groups.setdefault(key, {**opts, "params": [], "names": []})
        groups[key]["params"].append(p)
        groups[key]["names"].append(name)
    unmatched = [k for k, hit in matched.items() if not hit]
    if unmatched:
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        raise ConfigError(f"param_overrides: {unmatched[0]!r} matches no trainable parameter of this model; "
                          f"names look like {', '.join(names[:3])}, ... ({len(names)} in all)")
    return list(groups.values())


def lr_lambda(steps: int, warmup: int, min_ratio: float):
    """Linear warm-up over ``warmup`` steps, then cosine from 1 to ``min_ratio`` at ``steps``."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = min(1.0, (step - warmup) / max(1, steps - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    return factor


def _aux_loss(model: nn.Module) -> Tensor | None:
    """Sum of the ``aux_loss`` tensors modules set during the last forward (then cleared,
    so a stale value is never counted twice)."""
    total = None
    for m in model.modules():
        aux = getattr(m, "aux_loss", None)
        if isinstance(aux, Tensor):
            total = aux.float() if total is None else total + aux.float()
            m.aux_loss = None
    return total


def predict(net: nn.Module, inputs: Any, lengths: Any, labels: Tensor, target: str,
            ignore_index: int) -> tuple[Tensor, Tensor]:
    """The model's output and the labels it is scored against. Sequence targets: only the
    scored positions (label != ignore_index), (n, V) and (n,): the head runs there alone."""
    if target == "sequence":
        scored = labels != ignore_index
        out, _ = net(inputs, lengths=lengths, positions=scored)
        return out, labels[scored]
    out, _ = net(inputs, lengths=lengths)
    return out, labels


def task_loss(out: Tensor, labels: Tensor, target: str) -> Tensor:
    """The training loss of :func:`predict`'s output."""
    out = out.float()
    if target == "regression":
        return F.mse_loss(out.reshape(-1), labels.float())
    return F.cross_entropy(out, labels)


def unpadded(inputs: Any, lengths: Any) -> Any:
    """``lengths`` or, where no row of the batch is padded, None: the layers then skip their
    masking (a mask of all-real positions changes nothing, but costs a pass over the
    activations per layer, forward and backward). Pair tasks: per side. Runs on the batch
    as the loader gives it (on the CPU), before it moves to the device."""
    if isinstance(lengths, (tuple, list)):
        return type(lengths)(unpadded(x, n) for x, n in zip(inputs, lengths))
    if isinstance(lengths, Tensor) and lengths.device.type == "cpu" and lengths.numel() \
            and bool((lengths == inputs.shape[1]).all()):
        return None
    return lengths


def _to(x: Any, device: torch.device) -> Any:
    if isinstance(x, Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, (tuple, list)):
        return type(x)(_to(v, device) for v in x)
    return x


def param_hash(model: nn.Module) -> str:
    """SHA-256 of every parameter and buffer (names, shapes and bytes, in state-dict order)."""
    import hashlib

    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


# ---------------------------------------------------------------------------- evaluation
def chance_verdict(metric: str, value: float, chance: float, n: int) -> bool:
    """Did the model beat chance, beyond what a chance-level predictor reaches by luck?

    accuracy: ``value > chance + 2 sqrt(chance (1 - chance) / n)`` (two binomial standard
    errors of a predictor scoring at the chance rate over n scored items);
    mse: ``value < chance (1 - 2 sqrt(2 / n))`` (two standard errors of a sample variance).
    """
    if n < 1 or not math.isfinite(value):
        return False
    if metric == "accuracy":
        return value > chance + 2 * math.sqrt(max(chance * (1 - chance), 0.0) / n)
    return value < chance * (1 - 2 * math.sqrt(2 / n))


@torch.no_grad()
def evaluate(model: nn.Module, ds, plan: Plan, split: str, *, d: Dist | None = None, device=None,
             autocast=contextlib.nullcontext, batch_size: int | None = None) -> dict[str, Any]:
    """Metric, loss and chance level of ``model`` on a split (each rank scores its stride
    of the items; sums are all-reduced)."""
    d = d or Dist()
    device = device or torch.device("cpu")
    info = ds.info
    cfg = plan.config
    bs = batch_size or cfg.eval_batch_size or cfg.batch_size
    was_training = model.training
    model.eval()
    idx = list(range(d.rank, len(ds), d.world))
    loader = DataLoader(Subset(ds, idx), batch_size=bs, shuffle=False, collate_fn=ds.collate,
                        num_workers=cfg.num_workers)
    n_cls = info.n_classes if info.target == "class" else 1
    # sums: [metric (correct or squared error), loss * n, n, label sum, label^2 sum] + class histogram
    sums = torch.zeros(5 + n_cls, dtype=torch.float64, device=device)
    for inputs, lengths, labels in loader:
        lengths = unpadded(inputs, lengths)
        inputs, lengths, labels = _to(inputs, device), _to(lengths, device), _to(labels, device)
        with autocast():
            out, labels = predict(model, inputs, lengths, labels, info.target, info.ignore_index)
        out = out.float()
        _aux_loss(model)  # discard
        if info.target == "regression":
            pred, y = out.reshape(-1), labels.float()
            sums[0] += (pred - y).pow(2).sum()
            sums[1] += F.mse_loss(pred, y, reduction="sum")
            sums[2] += y.numel()
            sums[3] += y.sum()
            sums[4] += y.pow(2).sum()
        else:  # a class per item, or per scored position (predict kept only those)
            sums[0] += (out.argmax(-1) == labels).sum()
            sums[1] += F.cross_entropy(out, labels, reduction="sum")
            sums[2] += labels.numel()
            if info.target == "class":
                sums[5:] += torch.bincount(labels, minlength=n_cls)[:n_cls].to(sums.dtype)
    if d.on:
        torch_dist.all_reduce(sums)
    model.train(was_training)
    n = int(sums[2])
    value = float(sums[0] / max(n, 1))
    if info.target == "regression":
        mean = float(sums[3]) / max(n, 1)
        chance = float(sums[4]) / max(n, 1) - mean * mean  # MSE of predicting the mean: the variance
        chance_rule = "variance of the target"
    elif info.target == "sequence":
        chance, chance_rule = 1.0 / info.n_classes, "1 / n_classes"
    else:
        chance, chance_rule = float(sums[5:].max()) / max(n, 1), "majority-class rate"
    metric = info.metric
    if metric == "accuracy":
        normalised = (value - chance) / max(1 - chance, 1e-12)
    else:
        normalised = 1 - value / max(chance, 1e-12)
    return {
        "split": split, "metric": metric, "value": value, "loss": float(sums[1]) / max(n, 1), "n": n,
        "chance": chance, "chance_rule": chance_rule, "beats_chance": chance_verdict(metric, value, chance, n),
        "normalised": normalised,  # 0 at chance, 1 perfect (accuracy); R^2 (mse)
        "seq_len": info.seq_len, "items": len(ds),
    }


# ---------------------------------------------------------------------------- the run
# Options that may change between a run and its resume: a run stopped by a non-finite step
# is meant to be resumed with on_nonfinite=skip.
_MAY_CHANGE_ON_RESUME = ("on_nonfinite",)


def same_config(saved: Any, cfg: RunConfig) -> bool:
    """Whether a config read back from a run folder's JSON is ``cfg`` (up to the options
    that may change on a resume)."""
    def canon(c: Any) -> str:
        c = {k: v for k, v in c.items() if k not in _MAY_CHANGE_ON_RESUME} if isinstance(c, dict) else c
        return json.dumps(c, sort_keys=True, default=str)

    return canon(saved) == canon(cfg.to_dict())


def _check_run_dir(out: Path, cfg: RunConfig, resume: bool) -> None:
    f = out / "config.json"
    if f.is_file() and resume:
        saved = json.loads(f.read_text())
        if not same_config(saved, cfg):
            diff = sorted(k for k in set(saved) | set(cfg.to_dict())
                          if saved.get(k) != cfg.to_dict().get(k) and k not in _MAY_CHANGE_ON_RESUME)
            raise RunExists(f"{out} holds a run with a different config (differs in: {', '.join(diff)}); "
                            "use another output folder, or pass --no-resume to start over there")


def _resume_point(out: Path, d: Dist, say, log_line) -> Path | None:
    """The checkpoint to resume from (rank 0 verifies, every rank takes its answer); the
    damaged ones skipped on the way are said and logged."""
    answer: list[Any] = [None, None]  # path, error message
    if d.main:
        try:
            ck, skipped = checkpoint.resume_point(out)
            for path, why in skipped:
                say(f"skipping checkpoint {path}: {why}")
                log_line({"event": "checkpoint_skipped", "checkpoint": str(path), "reason": why})
            answer = [str(ck) if ck is not None else None, None]
        except checkpoint.CheckpointError as e:
            log_line({"event": "no_valid_checkpoint", "error": str(e)})
            answer = [None, str(e)]
    if d.on:
        torch_dist.broadcast_object_list(answer, src=0)
    if answer[1] is not None:
        raise checkpoint.CheckpointError(answer[1])
    return Path(answer[0]) if answer[0] is not None else None


def _json_float(x: float) -> float | str:
    return x if math.isfinite(x) else str(x)  # JSON has no NaN / Infinity


def _nonfinite_step(cfg: RunConfig, step: int, loss: float, total: float | None, model: nn.Module,
                    last_ckpt: tuple[int, Path | None] | None, skips: int, say, log_line) -> int:
    """A step whose loss or gradients are not finite: raise :class:`NonFiniteError`
    (``on_nonfinite: stop``) or log it and return 1, the skip to count (``skip``)."""
    name = faults.first_nonfinite_grad(model.named_parameters())
    what = f"loss {loss}" + (f" (with aux losses {total})" if total is not None else "")
    what += f", first parameter with a non-finite gradient: {name}" if name else ", every gradient finite"
    row = {"event": "nonfinite", "step": step, "loss": _json_float(loss), "param": name, "action": cfg.on_nonfinite}
    if total is not None:
        row["total_loss"] = _json_float(total)
    if cfg.on_nonfinite == "skip":
        log_line({**row, "skips": skips + 1})
        say(f"step {step}: non-finite {what}; update skipped ({skips + 1} so far)")
        return 1
    log_line(row)
    if last_ckpt is None or last_ckpt[1] is None:
        kept = "No checkpoint was written before it."
    else:
        kept = f"The newest checkpoint, {last_ckpt[1]} (step {last_ckpt[0]}), holds the last good weights."
    raise faults.NonFiniteError(
        f"step {step}: non-finite {what}. The run stopped without updating. {kept} Lower lr, set grad_clip, or "
        "run the same command with on_nonfinite=skip to skip such steps' updates (it resumes from that checkpoint).")


def train(cfg: RunConfig | Plan, out: str | Path | None = None, *, resume: bool = True, data_root=None,
          progress: bool = True, log=print, datasets: dict[str, Any] | None = None,
          handle_signals: bool = True) -> dict[str, Any]:
    """Train ``cfg`` and evaluate it; return the result dict (also written to
    ``out/result.json`` and, line by line, the log to ``out/log.jsonl``).

    ``out`` holds ``config.json``, checkpoints and results; with ``resume`` (default) a run
    whose folder already has checkpoints continues from the newest one that verifies.
    ``datasets`` (split -> dataset) skips building them (the benchmark suite shares them).
    ``handle_signals``: while the loop runs, SIGTERM and SIGUSR1 stop it after the current
    step with a checkpoint (main thread only).

    Raises :class:`~seqzoo.train.faults.Preempted` after such a stop,
    :class:`~seqzoo.train.faults.NonFiniteError` at a non-finite step under
    ``on_nonfinite: stop``, and :class:`~seqzoo.train.checkpoint.CheckpointError` when the
    folder has checkpoints but none verifies.
    """
    plan = cfg if isinstance(cfg, Plan) else resolve(cfg)
    cfg = plan.config
    out = Path(out) if out is not None else None
    kind = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    d = init_distributed(kind)
    device = _device(cfg, d)
    autocast = _autocast(cfg, device)
    if cfg.batch_size % d.world:
        raise ConfigError(f"batch_size = {cfg.batch_size} must be divisible by the number of processes ({d.world})")
    per_rank = cfg.batch_size // d.world
    say = log if d.main else (lambda *a, **k: None)

    if out is not None and d.main:
        if not resume:  # start over in this folder
            import shutil

            shutil.rmtree(out / "checkpoints", ignore_errors=True)
            for name in ("log.jsonl", "result.json", "config.json"):
                (out / name).unlink(missing_ok=True)
        _check_run_dir(out, cfg, resume)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True, default=str) + "\n")
    d.barrier()

    # data: rank 0 generates (and caches) first, the others then load
    t_start = time.perf_counter()
    if datasets is None:
        if d.main:
            datasets = build_datasets(plan, data_root, progress=progress)
        d.barrier()
        if not d.main:
            datasets = build_datasets(plan, data_root, progress=False)
    t_data = time.perf_counter() - t_start
    train_ds = datasets["train"]
    if len(train_ds) // d.world < per_rank:
        raise ConfigError(f"train_size: the train split has {len(train_ds)} items, fewer than one batch of "
                          f"{per_rank} per process; raise train_size or lower batch_size")

    # model and optimiser (the same initial weights on every rank: seeded, then broadcast by DDP)
    torch.manual_seed(cfg.seed)
    model = build_run_model(plan).to(device)
    groups = param_groups(model, cfg.lr, cfg.weight_decay, cfg.param_overrides)
    n_params = sum(p.numel() for g in groups for p in g["params"])
    opt = torch.optim.AdamW([{k: v for k, v in g.items() if k != "names"} for g in groups], lr=cfg.lr,
                            betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg.steps, cfg.warmup_steps, cfg.min_lr_ratio))
    torch.manual_seed(cfg.seed + 1 + d.rank)  # dropout streams differ per rank
    net: nn.Module = model
    if d.on:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    step, epoch, offset = 0, 0, 0
    skips = 0  # steps whose update was skipped (on_nonfinite: skip)
    history: list[dict[str, Any]] = []
    evals: list[dict[str, Any]] = []
    resumed_from = None
    window: list[float] = []  # losses since the last log line

    def log_line(row: dict[str, Any]) -> None:
        if d.main and out is not None:
            with open(out / "log.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")

    ck = _resume_point(out, d, say, log_line) if (out is not None and resume) else None
    last_ckpt: tuple[int, Path | None] | None = None  # (step, folder) of the newest checkpoint of this run
    if ck is not None:
        state = checkpoint.load(ck, model, map_location=device)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step, epoch, offset = state["step"], state["epoch"], state["offset"]
        history, evals = state["history"], state["evals"]
        window[:] = state.get("window", [])
        skips = state.get("nonfinite_skips", 0)
        rngs = state["rng"]
        if len(rngs) != d.world:
            say(f"warning: {ck} was written by {len(rngs)} process(es), this run has {d.world}; "
                "the data order and random streams after the resume differ from an uninterrupted run")
        checkpoint.set_rng_state(rngs[d.rank % len(rngs)])
        resumed_from = str(ck)
        last_ckpt = (step, ck)
        say(f"resumed from {ck} (step {step})")
        log_line({"event": "resumed", "step": step, "checkpoint": str(ck)})

    def save_ckpt() -> None:
        nonlocal last_ckpt
        rngs = [checkpoint.rng_state()]
        if d.on:
            rngs = [None] * d.world
            torch_dist.all_gather_object(rngs, checkpoint.rng_state())
        if d.main and out is not None:
            state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": step, "epoch": epoch,
                     "offset": offset, "history": history, "evals": evals, "window": list(window), "rng": rngs,
                     "world": d.world, "nonfinite_skips": skips,
                     "config": cfg.to_dict()}
            checkpoint.save(out, step, model, state, keep=cfg.keep_checkpoints)
        last_ckpt = (step, checkpoint.folder(out, step) if out is not None else None)
        d.barrier()

    info = plan.info

    def reached(ev: dict[str, Any]) -> bool:
        """Has a validation reached cfg.stop_at (accuracy at least, MSE at most)?"""
        if cfg.stop_at is None:
            return False
        return ev["value"] <= cfg.stop_at if info.metric == "mse" else ev["value"] >= cfg.stop_at

    stopped = any(reached(ev) for ev in evals)  # a resumed run that had already stopped stays stopped
    sampler = ResumableSampler(train_ds, num_replicas=d.world, rank=d.rank, seed=cfg.seed)
    say(f"{cfg.layer} x {cfg.task}: {n_params:,} parameters, {len(train_ds):,} train items, "
        f"{cfg.steps} steps of {cfg.batch_size}, device {device}, "
        f"{'bf16 autocast' if autocast is not contextlib.nullcontext else 'fp32'}, {d.world} process(es)")
    bar = None
    if progress and d.main:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=step, desc=f"{cfg.layer} x {cfg.task}", unit="step", leave=False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    t0 = time.perf_counter()
    net.train()
    with contextlib.ExitStack() as stack:
        signals = stack.enter_context(faults.StopSignals(enabled=handle_signals))
        if bar is not None:
            stack.callback(bar.close)
        while step < cfg.steps and not stopped:
            sampler.set_epoch(epoch)
            sampler.start = offset * per_rank
            if hasattr(train_ds, "set_epoch"):
                train_ds.set_epoch(epoch)  # synthetic tasks: fresh samples every epoch
            loader = DataLoader(train_ds, batch_size=per_rank, sampler=sampler, collate_fn=train_ds.collate,
                                drop_last=True, num_workers=cfg.num_workers, generator=torch.Generator(),
                                pin_memory=device.type == "cuda")
            for inputs, lengths, labels in loader:
                lengths = unpadded(inputs, lengths)
                inputs, lengths, labels = _to(inputs, device), _to(lengths, device), _to(labels, device)
                with autocast():
                    pred, scored = predict(net, inputs, lengths, labels, info.target, info.ignore_index)
                    loss = task_loss(pred, scored, info.target)
                    aux = _aux_loss(model)
                    total = loss if aux is None else loss + aux
                opt.zero_grad(set_to_none=True)
                total.backward()
                grads = [p.grad for p in trainable if p.grad is not None]
                norm = faults.grad_norm(grads)
                # Two flags, agreed on by every rank (max over ranks) in one small all-reduce:
                # a non-finite loss or gradient norm, and the number of a stop signal received.
                # They are read with the loss in the one host sync this step makes.
                flags = torch.stack([(~torch.isfinite(total.detach()) | ~torch.isfinite(norm)).float(),
                                     norm.new_full((), float(signals.received))])
                if d.on:
                    torch_dist.all_reduce(flags, op=torch_dist.ReduceOp.MAX)
                loss_value, total_value, bad, signum = torch.cat(
                    [loss.detach().float().reshape(1), total.detach().float().reshape(1), flags]).tolist()
                if bad:
                    skips += _nonfinite_step(cfg, step + 1, loss_value, total_value if aux is not None else None,
                                             model, last_ckpt, skips, say, log_line)
                    opt.zero_grad(set_to_none=True)  # on_nonfinite = skip: no update this step
                else:
                    if cfg.grad_clip > 0:
                        faults.clip_grads_(grads, cfg.grad_clip, norm)
                    opt.step()
                    window.append(loss_value)
                sched.step()
                step += 1
                offset += 1
                if bar is not None:
                    bar.update(1)
                if step % cfg.log_every == 0 or step == cfg.steps:
                    # the mean over the steps that updated (none: every one was skipped)
                    mean = torch.tensor(sum(window) / len(window) if window else math.nan, dtype=torch.float64)
                    if d.on:
                        torch_dist.all_reduce(mean)
                        mean /= d.world
                    row = {"step": step, "loss": float(mean) if window else None, "lr": sched.get_last_lr()[0],
                           "time_s": round(time.perf_counter() - t0, 3)}
                    if skips:
                        row["nonfinite_skips"] = skips
                    history.append(row)
                    log_line(row)
                    if bar is not None and window:
                        bar.set_postfix(loss=f"{row['loss']:.4f}")
                    window.clear()
                if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps:
                    ev = {"step": step, **evaluate(net, datasets["val"], plan, "val", d=d, device=device,
                                                    autocast=autocast)}
                    evals.append(ev)
                    log_line(ev)
                    say(f"step {step}: val {ev['metric']} {ev['value']:.4f} (chance {ev['chance']:.4f})")
                    if reached(ev):
                        stopped = True
                        log_line({"event": "stop_at", "step": step, "value": ev["value"], "stop_at": cfg.stop_at})
                        say(f"step {step}: val {ev['metric']} reached stop_at={cfg.stop_at}: training ends here")
                if cfg.ckpt_every and step % cfg.ckpt_every == 0 and step < cfg.steps:
                    save_ckpt()
                if signum:  # a scheduler's notice (on any rank): checkpoint and stop, all at this step
                    if last_ckpt is None or last_ckpt[0] != step:
                        save_ckpt()
                    name = faults.signal_name(int(signum))
                    log_line({"event": "preempted", "signal": name, "step": step, "checkpoint": str(last_ckpt[1])})
                    d.barrier()  # no rank exits (and has torchrun stop the others) before all is written
                    raise faults.Preempted(name, step, last_ckpt[1])
                if step >= cfg.steps or stopped:
                    break
            else:
                epoch += 1
                offset = 0
    train_time = time.perf_counter() - t0
    save_ckpt()

    hashes = [param_hash(model)]  # every process must end with the same weights
    if d.on:
        hashes = [None] * d.world
        torch_dist.all_gather_object(hashes, param_hash(model))

    t1 = time.perf_counter()
    final = {split: evaluate(net, datasets[split], plan, split, d=d, device=device, autocast=autocast)
             for split in ("val", "test")}
    at_lengths = {}  # the same model on test splits of other lengths (eval_lengths)
    for n in cfg.eval_lengths:
        ds = length_test_split(plan, n, data_root)
        at_lengths[str(n)] = evaluate(net, ds, plan, "test", d=d, device=device, autocast=autocast)
        say(f"{cfg.layer} x {cfg.task}: test {info.metric} at L={n}: {at_lengths[str(n)]['value']:.4f}")
    eval_time = time.perf_counter() - t1
    result = {
        "layer": cfg.layer, "task": cfg.task, "metric": info.metric, "target": info.target,
        "val": final["val"], "test": final["test"],
        "value": final["test"]["value"], "chance": final["test"]["chance"],
        "beats_chance": final["test"]["beats_chance"],
        "params": n_params, "steps": step, "stopped_at_target": stopped, "nonfinite_skips": skips, "first_loss": history[0]["loss"] if history else None,
        "final_loss": history[-1]["loss"] if history else None,
        "train_time_s": round(train_time, 3), "eval_time_s": round(eval_time, 3), "data_time_s": round(t_data, 3),
        "world_size": d.world, "param_hashes": hashes, "device": str(device), "threads": torch.get_num_threads(),
        "resumed_from": resumed_from, "history": history, "evals": evals,
        "seq_len": {"train": info.seq_len, "test": plan.eval_info["test"].seq_len}, "test_at_length": at_lengths,
        "tokenizer": cfg.tokenizer, "config": cfg.to_dict(),
    }
    if d.main and out is not None:
        tmp = out / "result.json.tmp"
        tmp.write_text(json.dumps(result, indent=2, default=str) + "\n")
        os.replace(tmp, out / "result.json")
    say(f"{cfg.layer} x {cfg.task}: test {info.metric} {result['value']:.4f} (chance {result['chance']:.4f}, "
        f"{'beats chance' if result['beats_chance'] else 'NOT above chance'}); train {train_time:.1f}s")
    return result
