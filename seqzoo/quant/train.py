"""Training a :class:`~seqzoo.quant.tokenizer.Tokenizer` (VQ-VAE objective, van den Oord
et al. 2017, eq. 3: reconstruction MSE + the quantiser's loss) on a sequence data set.

    python -m seqzoo.quant.train train --quantizer vq-rotation --steps 1500 --out runs/tok
    python -m seqzoo.quant.train train --quantizer gumbel-hard --steps 1500 --out runs/tok-gumbel
    python -m seqzoo.quant.train evaluate runs/tok --data digits
    python -m seqzoo.quant.train compare --steps 1500          # FSQ, VQ, VQ+rotation, Gumbel soft/hard

``app`` is a ``typer.Typer`` meant to be mounted as ``seqzoo tokenizer ...``.

Data sets (``make_dataset(name, split)``, all offline and deterministic):
    digits     sklearn's 8x8 handwritten digits, bilinearly upsampled to 16x16, read in
               raster order: L = 256, C = 1 (a small "sequential image" task)
    digits32   the same upsampled to 32x32: L = 1024, C = 1
    digits8    the raw 8x8 images: L = 64, C = 1
    waves      procedural multi-channel signals: sums of 3 random sinusoids per channel
               with a random chirp and noise, L = 256, C = 2
The split is a fixed 80/20 permutation (digits) or a fixed seed per split (waves).
Any other name is a real-valued task of :mod:`seqzoo.tasks` (``image``, ``shapes``,
``pathfinder``, ``pathx``, ``adding``), built with ``seqzoo.tasks.build`` (splits "train",
"val", "test"; ``size``, ``root`` and task options pass through).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import torch
import typer
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

from seqzoo.config import ConfigError, config_from_dict, load_yaml, parse_override
from seqzoo.quant.metrics import code_histogram, masked_mse, perplexity
from seqzoo.quant.tokenizer import Tokenizer, TokenizerConfig
from seqzoo.train.loop import lr_lambda

__all__ = ["DATASETS", "QUANTIZERS", "app", "build_config", "check_data_name", "comparison_table", "evaluate_tokenizer",
           "make_dataset", "train_downstream", "train_tokenizer"]

DATASETS = ("digits", "digits32", "digits8", "waves")


# ---------------------------------------------------------------------- data
def _digits(side: int, split: str) -> TensorDataset:
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # scikit-learn ships the 8x8 digits inside its wheel
        raise ImportError("data set 'digits*' needs scikit-learn (pip install scikit-learn, or the "
                          "'bench'/'dev' extra); or use --data waves, which needs nothing") from e
    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0  # (N, 1, 8, 8) in [0, 1]
    if side != 8:
        x = torch.nn.functional.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
    x = x.reshape(x.shape[0], side * side, 1)  # (N, L, 1), raster order
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
    n_train = int(0.8 * x.shape[0])
    idx = perm[:n_train] if split == "train" else perm[n_train:]
    return TensorDataset(x[idx], y[idx])


def _waves(split: str, n: int | None = None, length: int = 256, channels: int = 2) -> TensorDataset:
    n = n or (4096 if split == "train" else 512)
    g = torch.Generator().manual_seed(0 if split == "train" else 1)
    t = torch.linspace(0, 1, length)  # (L,)
    freq = torch.exp(torch.empty(n, channels, 3).uniform_(math.log(1.0), math.log(24.0), generator=g))
    amp = torch.empty(n, channels, 3).uniform_(0.2, 1.0, generator=g)
    phase = torch.empty(n, channels, 3).uniform_(0, 2 * math.pi, generator=g)
    chirp = torch.empty(n, channels, 1).uniform_(-8.0, 8.0, generator=g)
    arg = 2 * math.pi * (freq[..., None] * t + 0.5 * chirp[..., None] * t**2) + phase[..., None]  # (n, C, 3, L)
    x = (amp[..., None] * torch.sin(arg)).sum(2)  # (n, C, L)
    x = x + 0.05 * torch.randn(x.shape, generator=g)
    return TensorDataset(x.transpose(1, 2).contiguous(), torch.zeros(n, dtype=torch.long))  # (n, L, C)


def check_data_name(name: str) -> None:
    """Raise ValueError (listing the valid names) if ``name`` is not a data set make_dataset knows."""
    if name in DATASETS:
        return
    from seqzoo import tasks

    if name not in tasks.list_tasks() or tasks.task_info(name).inputs != "real":
        real = [t for t in tasks.list_tasks() if tasks.task_info(t).inputs == "real"]
        raise ValueError(f"unknown data set {name!r}; valid: {', '.join(DATASETS)}, or a real-valued task: "
                         f"{', '.join(real)}")


def make_dataset(name: str, split: str = "train", *, size: int | None = None, root=None, **options: Any) -> Dataset:
    """A data set of (signal (L, C) float32, label) pairs: ``name`` in :data:`DATASETS`
    (``split`` in {"train", "test"}) or a real-valued :mod:`seqzoo.tasks` task (``split``
    in {"train", "val", "test"}; ``size``, ``root`` and task ``options`` go to
    ``seqzoo.tasks.build``)."""
    if name in DATASETS:
        if size is not None or root is not None or options:
            raise ValueError(f"data set {name!r} takes no size, root or options (those are for seqzoo.tasks tasks)")
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if name == "digits":
            return _digits(16, split)
        if name == "digits32":
            return _digits(32, split)
        if name == "digits8":
            return _digits(8, split)
        return _waves(split)
    from seqzoo import tasks

    check_data_name(name)
    return tasks.build(name, split=split, size=size, root=root, progress=False, **options)


def _signals(ds: Dataset) -> Tensor:
    """All signals of a data set as one tensor (N, L, C)."""
    if isinstance(ds, TensorDataset):
        return ds.tensors[0]
    items = (ds[i] for i in range(len(ds)))
    return torch.stack([it[0] if isinstance(it, (tuple, list)) else it for it in items])


# ---------------------------------------------------------------------- loops
@torch.no_grad()
def evaluate_tokenizer(tok: Tokenizer, test_x: Tensor, train_x: Tensor | None = None,
                       batch_size: int = 128) -> dict[str, float]:
    """Reconstruction and codebook statistics of ``tok`` on signals test_x (N, L, C).

    recon_mse       MSE of decode(encode(x)) against x, in the input scale
    mean_mse        MSE of predicting the per-channel mean of ``train_x`` (or test_x) everywhere
    position_mse    MSE of predicting the per-position-and-channel mean of train_x
    rel_mse         recon_mse / mean_mse (< 1: better than the mean predictor)
    usage           fraction of the vocabulary used by the test set's tokens
    perplexity      exp(entropy) of the test set's token distribution
    """
    was_training = tok.training
    tok.eval()
    ref = train_x if train_x is not None else test_x
    mean = ref.mean(dim=(0, 1))  # (C,)
    pos_mean = ref.mean(0) if ref.shape[1] == test_x.shape[1] else None  # (L, C)
    se = n = 0.0
    counts = torch.zeros(tok.vocab_size)
    for i in range(0, test_x.shape[0], batch_size):
        x = test_x[i : i + batch_size]
        ids = tok.encode(x)
        recon = tok.decode(ids, length=x.shape[1])
        se += float((recon - x).pow(2).sum())
        n += x.numel()
        counts += code_histogram(ids.cpu(), tok.vocab_size)
    tok.train(was_training)
    out = {
        "recon_mse": se / n,
        "mean_mse": float(masked_mse(mean.expand_as(test_x), test_x)),
        "usage": float((counts > 0).float().mean()),
        "perplexity": float(perplexity(counts)),
        "vocab_size": tok.vocab_size,
        "tokens_per_signal": math.ceil(test_x.shape[1] / tok.downsample),
    }
    if pos_mean is not None:
        out["position_mse"] = float(masked_mse(pos_mean.expand_as(test_x), test_x))
    out["rel_mse"] = out["recon_mse"] / max(out["mean_mse"], 1e-12)
    return out


def train_tokenizer(config: TokenizerConfig, data: str = "digits", *, steps: int = 1500, batch_size: int = 32,
                    lr: float = 2e-3, seed: int = 0, out: str | Path | None = None, log_every: int = 100,
                    time_limit: float | None = None, device: str = "cpu", log=print,
                    data_options: dict[str, Any] | None = None) -> tuple[Tokenizer, dict]:
    """Train a tokenizer on ``make_dataset(data, "train", **data_options)`` with Adam (linear
    warm-up over 5% of the steps, cosine decay to 10%); evaluate on the test split; save to
    ``out``. Stops early after ``time_limit`` seconds. Returns (tokenizer, summary dict)."""
    torch.manual_seed(seed)
    data_options = data_options or {}
    train_x = _signals(make_dataset(data, "train", **data_options))
    test_x = _signals(make_dataset(data, "test", **data_options))
    if config.d_input != train_x.shape[-1]:
        raise ConfigError(f"d_input={config.d_input} but data set {data!r} has {train_x.shape[-1]} channels")
    tok = Tokenizer(config).to(device)
    tok.fit_normalizer(train_x.to(device))
    opt = torch.optim.Adam(tok.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(steps, warmup=max(1, steps // 20), min_ratio=0.1))
    g = torch.Generator().manual_seed(seed)
    tok.train()
    t0 = time.perf_counter()
    history = []
    step = 0
    for step in range(steps):
        idx = torch.randint(0, train_x.shape[0], (batch_size,), generator=g)
        _, info = tok(train_x[idx].to(device))
        opt.zero_grad(set_to_none=True)
        info["loss"].backward()
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps - 1:
            row = {"step": step, "time_s": round(time.perf_counter() - t0, 1),
                   **{k: round(float(info[k].detach()), 5) for k in ("loss", "recon_mse", "perplexity", "usage", "tau")
                      if k in info}}
            history.append(row)
            log(" ".join(f"{k}={v}" for k, v in row.items()))
        if time_limit is not None and time.perf_counter() - t0 > time_limit:
            log(f"time limit {time_limit:.0f}s reached after {step + 1} steps")
            break
    train_time = time.perf_counter() - t0
    summary = {
        "data": data, "steps": step + 1, "batch_size": batch_size, "lr": lr, "seed": seed,
        "train_time_s": round(train_time, 1), "ms_per_step": round(1000 * train_time / (step + 1), 1),
        "train_window_usage": float(tok.quantizer.usage.usage()),
        "test": evaluate_tokenizer(tok, test_x.to(device), train_x.to(device)),
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(config).items()},
        "history": history,
    }
    if out is not None:
        out = Path(out)
        tok.save(out)
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        summary["path"] = str(out)
    return tok, summary


# ---------------------------------------------------------------------- CLI
app = typer.Typer(help="Train, evaluate and compare VQ / FSQ / Gumbel tokenizers (seqzoo.quant).", no_args_is_help=True,
                  add_completion=False)


# The quantizer names of the command line: each is a TokenizerConfig choice.
QUANTIZERS: dict[str, dict[str, Any]] = {
    "fsq": {"quantizer": "fsq"},
    "vq": {"quantizer": "vq", "rotation_trick": False},
    "vq-rotation": {"quantizer": "vq", "rotation_trick": True},
    "gumbel": {"quantizer": "gumbel", "gumbel_hard": False},
    "gumbel-hard": {"quantizer": "gumbel", "gumbel_hard": True},
}


class Quantizer(str, Enum):
    fsq = "fsq"
    vq = "vq"
    vq_rotation = "vq-rotation"
    gumbel = "gumbel"
    gumbel_hard = "gumbel-hard"


_DATA_HELP = "digits | digits32 | digits8 | waves | a real-valued seqzoo task (image, shapes, pathfinder, ...)"


def _check_data(name: str) -> str:
    try:
        check_data_name(name)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    return name


def _parse_levels(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError as e:
        raise typer.BadParameter(f"levels must be comma-separated integers like 8,5,5,5, got {text!r}") from e
    return levels


def build_config(quantizer: str | None = None, *, config: Path | None = None, d_input: int = 1,
                 **overrides: Any) -> TokenizerConfig:
    """TokenizerConfig from (lowest to highest priority) the defaults, a YAML file, the
    quantizer name (a key of :data:`QUANTIZERS`; None keeps the file's choice) and explicit
    overrides (None = not given)."""
    options: dict[str, Any] = load_yaml(config) if config is not None else {}
    if quantizer is not None:
        name = quantizer.value if isinstance(quantizer, Enum) else str(quantizer)
        if name not in QUANTIZERS:
            raise ConfigError(f"quantizer {name!r} is not one of {', '.join(map(repr, QUANTIZERS))}")
        options.update(QUANTIZERS[name])
    options.setdefault("d_input", d_input)
    options.update({k: v for k, v in overrides.items() if v is not None})
    return config_from_dict(TokenizerConfig, options, context="tokenizer config" + (f" ({config})" if config else ""))


@app.callback()
def _main() -> None:
    """Train, evaluate and compare VQ / FSQ / Gumbel tokenizers."""


@app.command()
def train(
    quantizer: Annotated[Quantizer | None,
                         typer.Option(help="fsq | vq | vq-rotation | gumbel | gumbel-hard "
                                           "[default: fsq, or the --config file's]")] = None,
    data: Annotated[str, typer.Option(help=_DATA_HELP, callback=_check_data)] = "digits",
    codebook_size: Annotated[int | None, typer.Option(help="VQ codebook size")] = None,
    levels: Annotated[str | None, typer.Option(help="FSQ levels, comma-separated (e.g. 8,5,5,5)")] = None,
    downsample: Annotated[int | None, typer.Option(help="signal steps per token")] = None,
    width: Annotated[int | None, typer.Option(help="conv channels")] = None,
    tau_anneal_steps: Annotated[int | None, typer.Option(help="Gumbel: steps until tau reaches its floor")] = None,
    kl_weight: Annotated[float | None, typer.Option(help="Gumbel: weight of KL(q || uniform)")] = None,
    steps: Annotated[int, typer.Option(help="optimiser steps")] = 1500,
    batch_size: Annotated[int, typer.Option()] = 32,
    lr: Annotated[float, typer.Option()] = 2e-3,
    seed: Annotated[int, typer.Option()] = 0,
    out: Annotated[Path, typer.Option(help="folder for tokenizer.safetensors, config.json, summary.json")] = (
        Path("runs/tokenizer")),
    config: Annotated[Path | None, typer.Option(help="YAML file of TokenizerConfig options (CLI options win)")] = None,
    time_limit: Annotated[float | None, typer.Option(help="stop after this many seconds")] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads")] = None,
) -> None:
    """Train a tokenizer, print progress and the test-set summary, save it to OUT."""
    if threads:
        torch.set_num_threads(threads)
    C = int(_signals(make_dataset(data, "test")).shape[-1])
    cfg = build_config(quantizer, config=config, d_input=C, codebook_size=codebook_size,
                       levels=_parse_levels(levels) if levels else None, downsample=downsample, width=width,
                       tau_anneal_steps=tau_anneal_steps, kl_weight=kl_weight)
    _, summary = train_tokenizer(cfg, data, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                                 out=out, time_limit=time_limit)
    typer.echo(json.dumps({k: summary[k] for k in ("data", "steps", "train_time_s", "ms_per_step", "train_window_usage",
                                                   "test")},
                          indent=2))
    typer.echo(f"saved to {out}")


@app.command()
def evaluate(
    path: Annotated[Path, typer.Argument(help="folder written by train / Tokenizer.save")],
    data: Annotated[str, typer.Option(help=_DATA_HELP, callback=_check_data)] = "digits",
) -> None:
    """Reconstruction MSE, mean-predictor MSE, usage and perplexity of a saved tokenizer."""
    tok = Tokenizer.load(path)
    test_x = _signals(make_dataset(data, "test"))
    train_x = _signals(make_dataset(data, "train"))
    typer.echo(json.dumps(evaluate_tokenizer(tok, test_x, train_x), indent=2))


def train_downstream(task: str, layer: str, tokenizer: str | Path | None, *, steps: int = 300, seed: int = 0,
                     task_options: dict[str, Any] | None = None, out: str | Path | None = None,
                     log=print) -> dict[str, Any]:
    """Train ``layer`` on seqzoo task ``task`` (``quick`` preset, ``steps`` steps) on raw
    signals (``tokenizer=None``) or through the frozen tokenizer saved in folder ``tokenizer``;
    return :func:`seqzoo.train.train`'s result (test metric in ``value``).

    The task is built with ``task_options`` over its defaults, exactly as
    ``make_dataset(task, **task_options)`` built the data the tokenizer was trained on (the
    quick preset's own task options, e.g. image pool=4, are replaced: the tokenizer expects
    the signals it was trained on)."""
    from seqzoo.train import compose, train

    check_data_name(task)
    if task in DATASETS:
        raise ConfigError(f"a downstream run needs a labelled seqzoo task (image, shapes, pathfinder, ...), "
                          f"not the tokenizer-only data set {task!r}")
    cfg = compose(task, layer, preset="quick", overrides=[f"steps={steps}", f"seed={seed}"])
    cfg = dataclasses.replace(cfg, task_options=dict(task_options or {}),
                              tokenizer=None if tokenizer is None else str(tokenizer))
    return train(cfg, out, resume=False, progress=False, log=log)


def comparison_table(rows: list[tuple[str, dict]], downstream: dict[str, dict] | None = None,
                     raw: dict | None = None, data_options: dict[str, Any] | None = None) -> str:
    """The Markdown table of ``compare``: rows (name, train_tokenizer summary); optional
    downstream results per name and on raw signals (seqzoo.train results)."""
    first = rows[0][1]
    t, c = first["test"], first["config"]
    opts = "".join(f" {k}={v}" for k, v in (data_options or {}).items())
    head = (f"data={first['data']}{opts} steps={first['steps']} batch={first['batch_size']} lr={first['lr']} "
            f"seed={first['seed']} downsample={c['downsample']} width={c['width']}")
    for _, s in rows:  # the settings of each quantiser family, once
        qc = s["config"]
        if qc["quantizer"] == "vq" and "VQ:" not in head:
            head += (f"; VQ: K={qc['codebook_size']} d_latent={qc['d_latent']} dead_code_steps={qc['dead_code_steps']}"
                     f" kmeans_init={qc['kmeans_init']}")
        if qc["quantizer"] == "gumbel" and "Gumbel:" not in head:
            head += (f"; Gumbel: K={qc['codebook_size']} d_latent={qc['d_latent']} tau {qc['tau_start']:g} -> "
                     f"{qc['tau_min']:g} over {qc['tau_anneal_steps']} steps, kl_weight={qc['kl_weight']:g}")
    head += f"; test mean-predictor MSE {t['mean_mse']:.4f}"
    if "position_mse" in t:
        head += f", per-position-mean MSE {t['position_mse']:.4f}"
    lines = [head]
    columns = ["quantizer", "vocab", "test recon MSE", "/ mean predictor", "test usage", "test perplexity",
               "train usage (last 100 steps)", "ms / step", "train time (s)"]
    if downstream:
        any_result = next(iter(downstream.values()))
        layer, metric = any_result["layer"], any_result["metric"]
        columns += [f"{layer}: test {metric}", f"{layer}: train s"]
        if raw is not None:
            lines.append(f"downstream: {layer} on {raw['task']} (quick preset, {raw['steps']} steps); raw signals "
                         f"(L={raw['seq_len']['train']}): test {metric} {raw['value']:.3f}, "
                         f"train {raw['train_time_s']:.1f} s; chance {raw['chance']:.3f}")
    lines += ["", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for name, s in rows:
        e = s["test"]
        cells = [name, str(e["vocab_size"]), f"{e['recon_mse']:.3g}", f"{e['rel_mse']:.3g}",
                 f"{100 * e['usage']:.1f}%", f"{e['perplexity']:.1f}", f"{100 * s['train_window_usage']:.1f}%",
                 f"{s['ms_per_step']:.0f}", f"{s['train_time_s']:.0f}"]
        if downstream:
            r = downstream[name]
            cells += [f"{r['value']:.3f}", f"{r['train_time_s']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


@app.command()
def compare(
    data: Annotated[str, typer.Option(help=_DATA_HELP, callback=_check_data)] = "digits",
    data_option: Annotated[list[str] | None, typer.Option(help="KEY=VALUE option of a seqzoo task --data "
                                                                "(repeatable), e.g. pool=2")] = None,
    quantizers: Annotated[str, typer.Option(help="comma-separated, in table order")] = ",".join(QUANTIZERS),
    steps: Annotated[int, typer.Option()] = 1500,
    batch_size: Annotated[int, typer.Option()] = 32,
    lr: Annotated[float, typer.Option()] = 2e-3,
    seed: Annotated[int, typer.Option()] = 0,
    downsample: Annotated[int, typer.Option()] = 4,
    codebook_size: Annotated[int, typer.Option(help="VQ and Gumbel codebook size")] = 512,
    levels: Annotated[str, typer.Option(help="FSQ levels (prod = FSQ vocabulary)")] = "8,8,8",
    width: Annotated[int | None, typer.Option(help="conv channels")] = None,
    dead_code_steps: Annotated[int | None, typer.Option(help="VQ dead-code restart after N unused steps (0: off)")] = None,
    kmeans_init: Annotated[bool, typer.Option(help="VQ k-means init from the first batch")] = True,
    tau_anneal_steps: Annotated[int | None, typer.Option(help="Gumbel: steps until tau reaches its floor "
                                                               "[default: the config's]")] = None,
    kl_weight: Annotated[float | None, typer.Option(help="Gumbel: weight of KL(q || uniform)")] = None,
    downstream: Annotated[str | None, typer.Option(help="a layer to train (quick preset) on the task DATA through "
                                                        "each tokenizer and on raw signals")] = None,
    downstream_steps: Annotated[int, typer.Option(help="steps of each downstream run")] = 300,
    out: Annotated[Path, typer.Option()] = Path("runs/tokenizer-compare"),
    threads: Annotated[int | None, typer.Option()] = None,
) -> None:
    """FSQ vs VQ vs VQ+rotation vs Gumbel (soft, hard) on the same data, steps and seed:
    a Markdown table, optionally with a downstream model trained through each tokenizer."""
    if threads:
        torch.set_num_threads(threads)
    names = [q.strip() for q in quantizers.split(",") if q.strip()]
    unknown = [q for q in names if q not in QUANTIZERS]
    if not names or unknown:
        raise typer.BadParameter(f"unknown quantizer(s) {unknown}; choose from {', '.join(QUANTIZERS)}",
                                 param_hint="--quantizers")
    if downstream is not None:
        import seqzoo

        if data in DATASETS:
            raise typer.BadParameter(f"--downstream needs a labelled seqzoo task as --data (image, shapes, ...), "
                                     f"not {data!r}", param_hint="--data")
        if downstream not in seqzoo.list_layers():
            raise typer.BadParameter(f"unknown layer {downstream!r}; valid: {', '.join(seqzoo.list_layers())}",
                                     param_hint="--downstream")
    try:
        data_options = dict(parse_override(o) for o in data_option or [])
        C = int(_signals(make_dataset(data, "test", **data_options)).shape[-1])
    except (ValueError, TypeError) as e:
        raise typer.BadParameter(str(e), param_hint="--data-option") from None
    rows = []
    for q in names:
        family = {"fsq": {}, "vq": {"dead_code_steps": dead_code_steps, "kmeans_init": kmeans_init},
                  "gumbel": {"tau_anneal_steps": tau_anneal_steps, "kl_weight": kl_weight}}[QUANTIZERS[q]["quantizer"]]
        cfg = build_config(q, d_input=C, downsample=downsample, codebook_size=codebook_size,
                           levels=_parse_levels(levels), width=width, **family)
        typer.echo(f"== {q}")
        _, s = train_tokenizer(cfg, data, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                               out=out / q, log_every=max(1, steps // 5), data_options=data_options)
        rows.append((q, s))
    results, raw = None, None
    if downstream is not None:
        results = {}
        for q in names:
            typer.echo(f"== {downstream} on {data} through {q}")
            results[q] = train_downstream(data, downstream, out / q, steps=downstream_steps, seed=seed,
                                          task_options=data_options, out=out / "downstream" / q)
        typer.echo(f"== {downstream} on {data}, raw signals")
        raw = train_downstream(data, downstream, None, steps=downstream_steps, seed=seed,
                               task_options=data_options, out=out / "downstream" / "raw")
    table = comparison_table(rows, results, raw, data_options)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(table + "\n")
    typer.echo(table)


if __name__ == "__main__":
    app()
