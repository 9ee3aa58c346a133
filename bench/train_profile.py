"""Where the time of a training step goes: a run's model, data, optimiser and precision as
``seqzoo train`` builds them, a few steps timed piece by piece, then profiled op by op.

    python -m bench.train_profile --task listops --layer s4d                   # full-size ListOps
    python -m bench.train_profile --task listops --layer s4d --workers 2       # data in 2 processes
    python -m bench.train_profile --task listops --layer s4d --preset quick --device cpu --steps 3

Prints, per step (medians): the wait for the next batch on the host (collation, or the
wait for a worker), host-to-device copy, forward + backward, optimiser, and the whole step
with the one host sync ``seqzoo train`` makes; then the ops that took the most time
(device time on a GPU, CPU time otherwise) in ``--profile-steps`` steps. Only
``--train-size`` items are generated (default 4096): the batches have the full length.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.data import DataLoader

from seqzoo.train import config as run_config
from seqzoo.train import loop


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="listops")
    p.add_argument("--layer", default="s4d")
    p.add_argument("--preset", default="full")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=20, help="timed steps (after 3 warm-up steps)")
    p.add_argument("--profile-steps", type=int, default=5)
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--train-size", type=int, default=4096)
    p.add_argument("--data-root", default=None)
    p.add_argument("overrides", nargs="*", help="key=value run options, as for seqzoo train")
    args = p.parse_args(argv)
    dev = torch.device(args.device)
    cfg = run_config.compose(args.task, args.layer, args.preset, [*args.overrides, f"train_size={args.train_size}"])
    plan = run_config.resolve(cfg)
    from seqzoo import tasks

    ds = tasks.build(cfg.task, split="train", size=cfg.train_size, root=args.data_root, progress=False, **cfg.task_options)
    if cfg.pad_to_max:
        ds.pad_to = ds.info.seq_len
    torch.manual_seed(cfg.seed)
    model = loop.build_run_model(plan).to(dev).train()
    opt = torch.optim.AdamW(loop.param_groups(model, cfg.lr, cfg.weight_decay), lr=cfg.lr)
    autocast = loop._autocast(cfg, dev)
    loader = DataLoader(ds, batch_size=cfg.batch_size, shuffle=True, collate_fn=ds.collate, drop_last=True,
                        num_workers=args.workers, pin_memory=dev.type == "cuda", persistent_workers=args.workers > 0)
    batches = iter(loader)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def step(times: dict[str, list[float]] | None):
        nonlocal batches
        t0 = time.perf_counter()
        try:
            inputs, lengths, labels = next(batches)
        except StopIteration:
            batches = iter(loader)
            inputs, lengths, labels = next(batches)
        t1 = time.perf_counter()
        inputs, lengths, labels = (loop._to(t, dev) for t in (inputs, lengths, labels))
        sync()
        t2 = time.perf_counter()
        with autocast():
            logits, _ = model(inputs, lengths=lengths)
            loss = loop.task_loss(logits, labels, plan.info.target, plan.info.ignore_index)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        sync()
        t3 = time.perf_counter()
        opt.step()
        loss_value = loss.item()  # the one host sync per step of seqzoo train
        t4 = time.perf_counter()
        if times is not None:
            for k, v in (("data (host)", t1 - t0), ("to device", t2 - t1), ("forward + backward", t3 - t2),
                         ("optimiser + sync", t4 - t3), ("step", t4 - t0)):
                times[k].append(v)
        return loss_value

    for _ in range(3):
        step(None)
    times: dict[str, list[float]] = {k: [] for k in ("data (host)", "to device", "forward + backward", "optimiser + sync", "step")}
    for _ in range(args.steps):
        step(times)
    med = {k: statistics.median(v) for k, v in times.items()}
    n_params = sum(q.numel() for q in model.parameters())
    print(f"{cfg.layer} x {cfg.task} ({args.preset}): batch {cfg.batch_size}, L <= {ds.info.seq_len}, {cfg.n_layers} layers, "
          f"d_model {cfg.d_model}, {n_params / 1e6:.2f}M parameters, {args.device}, workers {args.workers}")
    for k, v in med.items():
        print(f"  {k:20s} {v * 1e3:8.2f} ms  ({100 * v / med['step']:.0f} %)")
    print(f"  {1 / med['step']:.1f} steps/s -> {cfg.steps} steps in {cfg.steps * med['step'] / 3600:.2f} h")

    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for _ in range(args.profile_steps):
            step(None)
    key = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=25, max_name_column_width=60))


if __name__ == "__main__":
    main()
