"""Training runs and the benchmark suite: one model x one task (:func:`train`), or every
layer x every task under a preset (:func:`seqzoo.train.suite.run_suite`).

    from seqzoo.train import compose, train
    cfg = compose("listops", "s4d", preset="quick", overrides=["steps=200", "layer.d_state=16"])
    result = train(cfg, out="runs/listops-s4d")        # resumes if runs/listops-s4d has checkpoints

The same code runs under ``torchrun --nproc_per_node=K -m seqzoo.cli train ...`` (DDP).
Configs: :mod:`seqzoo.train.config`; the loop: :mod:`seqzoo.train.loop`; checkpoints:
:mod:`seqzoo.train.checkpoint`; preemption and non-finite steps: :mod:`seqzoo.train.faults`;
the suite, tables and plots: :mod:`seqzoo.train.suite`.
"""

from seqzoo.train.config import Plan, RunConfig, compose, configs_dir, list_presets, resolve
from seqzoo.train.loop import RunExists, chance_verdict, evaluate, param_groups, train

__all__ = ["Plan", "RunConfig", "RunExists", "chance_verdict", "compose", "configs_dir", "evaluate",
           "list_presets", "param_groups", "resolve", "train"]
