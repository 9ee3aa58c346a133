"""The ``seqzoo`` command line.

    seqzoo list                            registered layers and tasks
    seqzoo train --task listops --layer s4d [--preset quick] [key=value ...]
                                           one training run (resumes from its checkpoints);
                                           also under ``torchrun --nproc_per_node=K -m seqzoo.cli train ...``;
                                           exits 75 when preempted (SIGTERM/SIGUSR1), see ``train --help``
    seqzoo bench lra --preset quick        every layer x every task: results.jsonl, results.md, accuracy.png
    seqzoo bench modes [--device cuda]     every layer: parallel vs recurrent (difference, time, memory, latency)
    seqzoo bench speed [--device cuda]     time and memory against L for both modes; step latency vs position
    seqzoo bench decode [--device cuda]    LM per layer at contexts 1k-64k: prefill tok/s, decode ms/token, state MB
    seqzoo demo                            every layer: parallel vs recurrent, max difference and time
    seqzoo tokenizer ...                   train / evaluate / compare VQ, FSQ and Gumbel tokenizers (seqzoo.quant)
    seqzoo configs export DIR              copy the configs (layers, lra, presets, recipes, tokenizer) out to edit;
                                           then SEQZOO_CONFIGS=DIR makes seqzoo use them
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import torch
import typer

from seqzoo.config import ConfigError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="seqzoo: sequence layers in parallel and recurrent form.")


def _mount_subcommands() -> None:
    from seqzoo.quant.train import app as tokenizer_app

    app.add_typer(tokenizer_app, name="tokenizer", help="Train, evaluate and compare VQ/FSQ/Gumbel tokenizers.")


_mount_subcommands()


bench_app = typer.Typer(add_completion=False, no_args_is_help=True,
                        help="Benchmarks: the LRA-style suite, parallel vs recurrent modes, speed against L, decoding.")
app.add_typer(bench_app, name="bench")


configs_app = typer.Typer(add_completion=False, no_args_is_help=True,
                          help="The YAML configs of layers, tasks, presets and tokenizers.")
app.add_typer(configs_app, name="configs")


def _fail(e: Exception) -> None:
    typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _names(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


@app.command("list")
def list_cmd() -> None:
    """List the registered layers and tasks."""
    import seqzoo.tasks

    typer.echo("layers:")
    for name in seqzoo.list_layers():
        spec = seqzoo.get_layer(name)
        doc = (spec.cls.__doc__ or "").strip().splitlines()[0]
        typer.echo(f"  {name:16s} {doc}")
    typer.echo("tasks:")
    for name in seqzoo.tasks.list_tasks():
        info = seqzoo.tasks.task_info(name)
        kind = {"class": f"{info.n_classes} classes", "sequence": "per-position targets",
                "regression": "regression"}[info.target]
        typer.echo(f"  {name:16s} L={info.seq_len:<6d} {kind:22s} {info.description}")


@app.command(context_settings={"allow_extra_args": False})
def train(
    task: Annotated[str, typer.Option(help="task (seqzoo list); its config is configs/lra/<task>.yaml")],
    layer: Annotated[str, typer.Option(help="layer (seqzoo list); options from configs/layers/<layer>.yaml")] = "s4d",
    overrides: Annotated[list[str] | None, typer.Argument(
        help="key=value overrides of the run config (steps=500, lr=3e-3, task.seq_len=512, layer.d_state=16)")] = None,
    preset: Annotated[str, typer.Option(help="full (configs/lra, then the layer's recipe from configs/recipes/) "
                                                  "or a folder of configs/presets/")] = "full",
    config: Annotated[Path | None, typer.Option(help="a run config YAML used instead of configs/lra/<task>.yaml "
                                                     "and of the layer's recipe")] = None,
    out: Annotated[Path | None, typer.Option(help="run folder [default: runs/train/<task>-<layer>]")] = None,
    resume: Annotated[bool, typer.Option(help="continue from the newest checkpoint in --out")] = True,
    data: Annotated[Path | None, typer.Option(help="data cache root [default: $SEQZOO_DATA or ~/.cache/seqzoo]")] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads")] = None,
    dry_run: Annotated[bool, typer.Option(help="validate, build the model, print the plan; no data, no training")] = False,
) -> None:
    """Train one layer on one task; evaluate on val and test; save checkpoints and result.json.

    \b
    Exit status:
      0   trained and evaluated (result.json written)
      1   stopped at a step with a non-finite loss or gradient (the message
          names step and parameter; on_nonfinite=skip skips such steps)
      2   bad config, or --out has checkpoints and none of them verifies
      75  preempted: on SIGTERM or SIGUSR1 the current step finished and a
          checkpoint was written (EX_TEMPFAIL); the same command resumes
    """
    from seqzoo.train import compose, resolve
    from seqzoo.train import train as run_train
    from seqzoo.train.checkpoint import CheckpointError
    from seqzoo.train.faults import EXIT_PREEMPTED, NonFiniteError, Preempted

    if threads:
        torch.set_num_threads(threads)
    try:
        cfg = compose(task, layer, preset=preset, overrides=overrides or [], config=config)
    except ConfigError as e:
        _fail(e)
    if dry_run:
        from seqzoo.train.loop import build_run_model, param_groups

        plan = resolve(cfg)
        model = build_run_model(plan)
        n = sum(p.numel() for p in model.parameters() if p.requires_grad)
        param_groups(model, cfg.lr, cfg.weight_decay, cfg.param_overrides)  # every override must match a parameter
        typer.echo(json.dumps(cfg.to_dict(), indent=2, default=str))
        typer.echo(f"{cfg.layer} x {task}: {n:,} parameters; train L={plan.info.seq_len}, "
                   f"test L={plan.eval_info['test'].seq_len}; recipe {cfg.recipe}: {cfg.recipe_source}")
        return
    out = out or Path("runs/train") / f"{task}-{layer}"
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    try:
        result = run_train(cfg, out, resume=resume, data_root=data)
    except (ConfigError, CheckpointError) as e:
        _fail(e)
    except Preempted as e:  # every rank says it: under torchrun each worker's exit is explained
        typer.echo(f"{f'rank {rank}: ' if world > 1 else ''}{e}", err=True)
        raise typer.Exit(EXIT_PREEMPTED) from None
    except NonFiniteError as e:
        if rank == 0:
            typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    finally:
        _leave_process_group()
    if rank == 0:  # under torchrun: rank 0 reports
        typer.echo(json.dumps({k: result[k] for k in ("layer", "task", "metric", "value", "chance", "beats_chance",
                                                       "train_time_s")}, default=str))
        typer.echo(f"run folder: {out}")


def _leave_process_group() -> None:
    """A torchrun worker tears its process group down before the interpreter exits. Left to
    the interpreter's finalisation, gloo's worker threads can still hold work objects with
    Python references whose release then aborts the process (SIGABRT, "terminate called
    without an active exception"; pytorch/pytorch#179291): seen once in
    tests/train/test_ddp.py in a fresh-clone CI run (rare: 0 of 12 runs of that command
    reproduced it, with or without this call)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@bench_app.command("lra")
def bench_lra(
    preset: Annotated[str, typer.Option(help="quick (CPU minutes) | full (LRA-sized, for a GPU; each layer's "
                                                  "recipe, see configs/recipes/) | a configs/presets folder")] = "quick",
    layers: Annotated[str | None, typer.Option(help="comma-separated layers [default: all registered]")] = None,
    tasks: Annotated[str | None, typer.Option(help="comma-separated tasks [default: all registered]")] = None,
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides applied to every run")] = None,
    out: Annotated[Path | None, typer.Option(help="results folder [default: runs/bench/lra-<preset>]")] = None,
    jobs: Annotated[int | None, typer.Option(help="runs in parallel (processes) [default: min(2, CPUs)]")] = None,
    threads: Annotated[int, typer.Option(help="torch threads per process")] = 1,
    data: Annotated[Path | None, typer.Option(help="data cache root [default: $SEQZOO_DATA or ~/.cache/seqzoo]")] = None,
    resume: Annotated[bool, typer.Option(help="reuse finished runs in --out that have the same config")] = True,
    dry_run: Annotated[bool, typer.Option(help="validate every config and build every model; print each run's "
                                              "recipe and its source; no data, no training")] = False,
    estimate: Annotated[int, typer.Option(help="with --dry-run: time this many training steps of every run (on its "
                                               "data, --threads threads) and print its training time and the total")] = 0,
) -> None:
    """Every layer x every task under a preset: results.jsonl, results.md (table; with the
    full preset, the published LRA numbers beside ours) and accuracy.png. Under the full
    preset s4, s4d, rtf and s5 run their papers' own recipes (configs/recipes/), the other
    layers the common one (configs/lra/); `recipe=common` runs every layer on the common one."""
    from seqzoo.train.suite import plan_suite, run_suite

    try:
        if estimate and not dry_run:
            raise ConfigError("--estimate times the runs of a --dry-run: add --dry-run")
        if dry_run:
            if estimate:
                torch.set_num_threads(threads)  # the timed steps run with the suite's threads per run
            _dry_run(plan_suite(preset, _names(layers), _names(tasks), overrides or []), estimate, data)
            return
        s = run_suite(preset, out, layers=_names(layers), tasks=_names(tasks), overrides=overrides or [], jobs=jobs,
                      threads=threads, data_root=data, resume=resume)
    except ConfigError as e:
        _fail(e)
    typer.echo("")
    typer.echo(s.table)
    typer.echo("")
    for name, path in s.files.items():
        typer.echo(f"{name:14s} {Path(path).resolve()}")


def _block(c) -> str:
    """A run's block in a few words: "post-BN, no MLP, drop 0.1 tied"."""
    norm = {"layernorm": "LN", "rmsnorm": "RMS", "batchnorm": "BN"}[c.norm]
    parts = [f"{'pre' if c.prenorm else 'post'}-{norm}", f"MLP x{c.mlp_ratio:g}" if c.mlp_ratio else "no MLP"]
    if c.dropout:
        parts.append(f"drop {c.dropout:g}{' tied' if c.tie_dropout else ''}")
    return ", ".join(parts)


def _dry_run(cells, estimate: int = 0, data_root: Path | None = None) -> None:
    from seqzoo.timing import table
    from seqzoo.train import resolve
    from seqzoo.train.loop import build_run_model, param_groups
    from seqzoo.train.suite import step_cost

    rows, minutes = [], []
    for cell in cells:
        plan = resolve(cell.config)
        c = cell.config
        model = build_run_model(plan)
        param_groups(model, c.lr, c.weight_decay, c.param_overrides)  # every override must match a parameter
        n = sum(p.numel() for p in model.parameters() if p.requires_grad)
        row = (cell.task, cell.layer + (f" ({cell.variant})" if cell.variant else ""), c.recipe, plan.info.seq_len,
               c.d_model, c.n_layers, _block(c), f"{n:,}", c.steps, c.batch_size, c.lr,
               c.train_size if c.train_size is not None else "default")
        if estimate:
            sec = step_cost(cell, estimate, data_root)
            minutes.append(sec * c.steps / 60)
            row += (f"{1000 * sec:.0f}", f"{minutes[-1]:.1f}")
        rows.append((*row, c.recipe_source))
    head = ("task", "layer", "recipe", "L", "d_model", "layers", "block", "params", "steps", "batch", "lr", "train items")
    if estimate:
        head += ("ms / step", "train min")
    typer.echo(table((*head, "source"), rows))
    if estimate:
        typer.echo(f"{len(cells)} runs: {sum(minutes):.0f} minutes of training with {torch.get_num_threads()} thread(s) "
                   f"each (from {estimate} timed steps per run; evaluations not included); with --jobs J in parallel "
                   f"about {sum(minutes):.0f} / J minutes when J * threads <= the CPU cores")
    else:
        typer.echo(f"{len(cells)} runs validated and built (no data generated, nothing trained)")


@bench_app.command("modes")
def bench_modes(
    layers: Annotated[str | None, typer.Option(help="comma-separated layers [default: all]")] = None,
    length: Annotated[int, typer.Option(help="sequence length L")] = 1024,
    d_model: Annotated[int, typer.Option()] = 64,
    batch: Annotated[int, typer.Option()] = 1,
    repeats: Annotated[int, typer.Option(help="timed repeats (medians)")] = 3,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads")] = None,
    device: Annotated[str, typer.Option(help="cpu | cuda | cuda:N")] = "cpu",
    out: Annotated[Path, typer.Option(help="results folder")] = Path("runs/bench/modes"),
) -> None:
    """Every layer, parallel vs recurrent inference on one sequence: max difference, time and
    peak memory of each mode, per-token step latency. One table (modes.md) and one plot (modes.png)."""
    from seqzoo.speed import compare_modes, modes_table, plot_modes

    dev = _device(device, threads)
    try:
        rows = compare_modes(_names(layers), d_model=d_model, length=length, batch=batch, repeats=repeats, device=dev)
    except ConfigError as e:
        _fail(e)
    _write_bench(out, "modes", rows, plot_modes,
                 f"seqzoo bench modes: B={batch}, L={length}, d_model={d_model}, float32, {_where(dev)}, "
                 f"torch {torch.__version__}\n\n" + modes_table(rows))


@bench_app.command("speed")
def bench_speed(
    layers: Annotated[str | None, typer.Option(help="comma-separated layers [default: all]")] = None,
    lengths: Annotated[str, typer.Option(help="comma-separated sequence lengths")] = "256,1024,4096",
    positions: Annotated[str, typer.Option(help="comma-separated positions for the step latency")] = "1,256,1024,4096",
    d_model: Annotated[int, typer.Option()] = 64,
    batch: Annotated[int, typer.Option()] = 1,
    repeats: Annotated[int, typer.Option(help="timed repeats (medians)")] = 3,
    max_recurrent_length: Annotated[int, typer.Option(help="longest L timed in the recurrent form")] = 4096,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads")] = None,
    device: Annotated[str, typer.Option(help="cpu | cuda | cuda:N")] = "cpu",
    out: Annotated[Path, typer.Option(help="results folder")] = Path("runs/bench/speed"),
) -> None:
    """Time and peak memory against L for the parallel and recurrent forms of every layer,
    and step latency against position: speed.md, speed.jsonl, speed.png."""
    from seqzoo.speed import plot_speed, speed_sweep, speed_tables

    dev = _device(device, threads)
    try:
        Ls = [int(v) for v in lengths.split(",") if v.strip()]
        Ps = [int(v) for v in positions.split(",") if v.strip()]
    except ValueError:
        _fail(ValueError(f"--lengths/--positions must be comma-separated integers, got {lengths!r}, {positions!r}"))
    try:
        rows = speed_sweep(_names(layers), d_model=d_model, lengths=Ls, positions=Ps, batch=batch, repeats=repeats,
                           max_recurrent_length=max_recurrent_length, device=dev)
    except ConfigError as e:
        _fail(e)
    _write_bench(out, "speed", rows, plot_speed,
                 f"seqzoo bench speed: B={batch}, d_model={d_model}, float32, {_where(dev)}, "
                 f"torch {torch.__version__}\n\n" + speed_tables(rows))


@bench_app.command("decode")
def bench_decode(
    layers: Annotated[str | None, typer.Option(help="comma-separated layers [default: every layer with a recurrent form]")] = None,
    contexts: Annotated[str, typer.Option(help="comma-separated prompt lengths (the context of the timed steps)")] = "1024,4096,16384",
    d_model: Annotated[int, typer.Option()] = 256,
    n_layers: Annotated[int, typer.Option(help="blocks of the language model")] = 4,
    mlp_ratio: Annotated[float, typer.Option(help="the blocks' MLP width / d_model (0: no MLP, Mamba's LM layout)")] = 2.0,
    batch: Annotated[int, typer.Option()] = 1,
    new_tokens: Annotated[int, typer.Option(help="decode steps per timed run")] = 32,
    repeats: Annotated[int, typer.Option(help="timed runs (medians)")] = 5,
    mode: Annotated[str, typer.Option(help="auto | eager | compile | cuda_graph (auto: eager on CPU, CUDA graphs on GPU)")] = "auto",
    threads: Annotated[int | None, typer.Option(help="torch CPU threads")] = None,
    device: Annotated[str, typer.Option(help="cpu | cuda | cuda:N")] = "cpu",
    out: Annotated[Path, typer.Option(help="results folder")] = Path("runs/bench/decode"),
) -> None:
    """A language model around every layer at each context: prefill tokens/s (parallel form
    over the prompt), decode ms/token and tokens/s (recurrent form), the state the decoder
    carries (attention: its KV cache), and the weight-read floor (one matrix-vector pass
    over the step's weights, timed alongside): decode.md, decode.jsonl, decode.png."""
    from seqzoo.speed import decode_sweep, decode_table, plot_decode

    dev = _device(device, threads)
    if mode not in ("auto", "eager", "compile", "cuda_graph"):
        _fail(ValueError(f"--mode must be auto, eager, compile or cuda_graph, got {mode!r}"))
    try:
        Cs = [int(v) for v in contexts.split(",") if v.strip()]
    except ValueError:
        _fail(ValueError(f"--contexts must be comma-separated integers, got {contexts!r}"))
    if not Cs or min(Cs) < 1:
        _fail(ValueError(f"--contexts must be positive, got {contexts!r}"))
    try:
        rows = decode_sweep(_names(layers), d_model=d_model, n_layers=n_layers, contexts=Cs, new_tokens=new_tokens,
                            batch=batch, device=dev, mode=mode, repeats=repeats, mlp_ratio=mlp_ratio)
    except (ConfigError, ValueError) as e:
        _fail(e)
    _write_bench(out, "decode", rows, plot_decode,
                 f"seqzoo bench decode: {n_layers} layers, d_model={d_model}, mlp_ratio={mlp_ratio:g}, B={batch}, float32, {_where(dev)}, "
                 f"{new_tokens} tokens per run, torch {torch.__version__}\n\n" + decode_table(rows))


def _device(device: str, threads: int | None) -> torch.device:
    """The benchmark's device (a clear error when it is not there); sets the CPU threads."""
    if threads:
        torch.set_num_threads(threads)
    try:
        dev = torch.device(device)
    except RuntimeError:
        _fail(ValueError(f"--device must be cpu, cuda or cuda:N, got {device!r}"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        _fail(ValueError("--device cuda: no CUDA device here (torch.cuda.is_available() is False)"))
    if dev.type not in ("cpu", "cuda"):
        _fail(ValueError(f"--device must be cpu or cuda, got {device!r}"))
    return dev


def _where(dev: torch.device) -> str:
    if dev.type == "cuda":
        return f"{torch.cuda.get_device_name(dev)}"
    return f"CPU, {torch.get_num_threads()} thread(s)"


def _write_bench(out: Path, stem: str, rows: list[dict], plot, text: str) -> None:
    """<stem>.md (the table), <stem>.jsonl (the rows) and <stem>.png in ``out``; print the
    table and the files' paths."""
    from seqzoo.speed import write_jsonl

    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.md").write_text(text + "\n")
    files = [write_jsonl(rows, out / f"{stem}.jsonl"), out / f"{stem}.md", plot(rows, out / f"{stem}.png")]
    typer.echo(text)
    for f in files:
        if f is not None:
            typer.echo(str(f))


@app.command()
def demo(
    d_model: int = typer.Option(64, help="model width"),
    length: int = typer.Option(512, help="sequence length"),
    batch: int = typer.Option(2, help="batch size"),
    seed: int = typer.Option(0),
) -> None:
    """Build each registered layer; run its parallel and recurrent forms on one sequence;
    print the max difference, time and memory of each mode (a small `seqzoo bench modes`)."""
    from seqzoo.speed import compare_modes, modes_table

    rows = compare_modes(d_model=d_model, length=length, batch=batch, repeats=1, seed=seed, progress=False)
    typer.echo(f"seqzoo demo: B={batch}, L={length}, d_model={d_model}, float32, {torch.get_num_threads()} threads")
    typer.echo(modes_table(rows))


@configs_app.command("export")
def configs_export(
    dest: Annotated[Path, typer.Argument(help="folder to create (it gets layers/, lra/, presets/, tokenizer/)")],
    force: Annotated[bool, typer.Option(help="write into DEST even if it exists (same-named files are replaced)")] = False,
) -> None:
    """Copy the configs seqzoo uses (a checkout's configs/, $SEQZOO_CONFIGS, or the copy installed
    with the package) to DEST, to edit them; `export SEQZOO_CONFIGS=DEST` then makes seqzoo use them."""
    import shutil

    from seqzoo.config import configs_dir

    try:
        src = configs_dir()
    except ConfigError as e:
        _fail(e)
    if dest.exists() and not force:
        _fail(FileExistsError(f"{dest} exists: choose a new folder, or pass --force to write into it"))
    if dest.resolve() == src.resolve():
        _fail(ValueError(f"{dest} is the configs folder in use; choose another folder"))
    shutil.copytree(src, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.py[co]"))
    n = sum(1 for p in dest.rglob("*") if p.is_file())
    typer.echo(f"copied the configs from {src} to {dest} ({n} files)")
    typer.echo(f"use them with: export SEQZOO_CONFIGS={dest.resolve()}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
