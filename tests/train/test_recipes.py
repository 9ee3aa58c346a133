"""The full preset's recipes, held to tables transcribed from the original config files.

Each table below is copied by hand from the files it cites, at the commit it cites (read
with git from snapshots of the public repositories). A test composes the run seqzoo would
launch for every (layer, task) and checks it against the table, so an edit of
configs/recipes/ or configs/lra/ that drifts from a paper's recipe fails here.

Our split sizes (for the step counts of the substitute tasks, which keep the original
number of epochs) are in ``OUR_TRAIN``; ``test_our_train_sizes`` checks them against the data.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import pytest

from seqzoo.train import compose, resolve
from seqzoo.train.config import recipe_of
from seqzoo.train.loop import build_run_model, param_groups

LRA = ("listops", "text", "retrieval", "image", "shapes", "pathfinder", "pathx")

# Train items per epoch: the original data sets (for their epoch counts) and ours.
ORIGINAL_TRAIN = {  # LRA / S4's loaders: 96k ListOps, 25k IMDB, 147,086 AAN pairs, 45k CIFAR (val_split 0.1), 160k Pathfinder
    "listops": 96_000, "text": 25_000, "retrieval": 147_086, "image": 45_000, "shapes": 45_000,
    "pathfinder": 160_000, "pathx": 160_000,
}
OUR_TRAIN = {  # seqzoo's train splits (text: Python 3.11's stdlib; image: the sklearn digits split)
    "listops": 96_000, "text": 5_554, "retrieval": 50_000, "image": 1_438, "shapes": 45_000,
    "pathfinder": 160_000, "pathx": 160_000,
}
FILE_TASK = {"listops": "listops", "text": "imdb", "retrieval": "aan", "image": "cifar", "shapes": "cifar",
             "pathfinder": "pathfinder", "pathx": "pathx"}


# ---------------------------------------------------------------------------- S4
@dataclass(frozen=True)
class S4Cfg:
    """One state-spaces/s4 experiment config (+ the model/layer/dataset defaults it uses)."""

    n_layers: int
    d_model: int
    prenorm: bool
    dropout: float  # model.dropout; the layer takes it too (backbones/model.py)
    d_state: int
    lr: float | dict  # model.layer.lr: a number for every kernel parameter, or {dt, A, B}
    dt_min: float
    n_ssm: int | None
    batch: int
    opt_lr: float
    wd: float
    steps: int
    warmup: int
    max_epochs: int
    seed: int
    eos: bool  # configs/dataset/<task>.yaml append_eos


S4_COMMIT = "e757cef57d89e448c413de7325ed5601aceaac13"
# state-spaces/s4 @ S4_COMMIT, configs/experiment/lra/s4-<file task>.yaml. Shared by all six:
# norm: batch; layer init legs, dt_max 0.1, bidirectional true; decoder pool; cosine_warmup
# scheduler; configs/model/s4.yaml tie_dropout: true; configs/model/layer/s4.yaml wd 0.0;
# trainer gradient_clip_val null; optimizer adamw betas [0.9, 0.999].
S4_DT_GLOBAL = {"dt": None, "A": 0.001, "B": 0.001}
S4 = {
    "listops": S4Cfg(6, 256, False, 0.0, 4, S4_DT_GLOBAL, 0.001, 1, 32, 0.01, 0.05, 120_000, 12_000, 40, 3333, True),
    "imdb": S4Cfg(6, 256, True, 0.0, 4, S4_DT_GLOBAL, 0.001, 1, 16, 0.01, 0.05, 50_000, 5_000, 32, 3333, True),
    "aan": S4Cfg(6, 256, True, 0.0, 4, S4_DT_GLOBAL, 0.001, 1, 64, 0.01, 0.05, 50_000, 5_000, 20, 3333, True),
    "cifar": S4Cfg(6, 512, False, 0.1, 64, 0.001, 0.001, 1, 50, 0.01, 0.05, 180_000, 18_000, 200, 2222, False),
    "pathfinder": S4Cfg(6, 256, True, 0.0, 64, 0.001, 0.001, None, 64, 0.004, 0.05, 500_000, 50_000, 200, 3333,
                        False),
    # lr 0.001 since commit 8bfbb60 "Update PathX config learning rate" (0.002 before)
    "pathx": S4Cfg(6, 256, True, 0.0, 64, 0.001, 0.0001, None, 16, 0.001, 0.05, 500_000, 50_000, 50, 3333, False),
}

# ---------------------------------------------------------------------------- RTF
RTF_COMMIT = "1d9e1e546f68b161e4658ea07d747d019d0a14e8"


@dataclass(frozen=True)
class RTFCfg:
    """One ruke1ire/RTF experiment config (experiments/state-spaces/configs/experiment/lra/
    rtf-<file task>.yaml), over configs/model/rtf.yaml (tie_dropout: true; layer lr, wd: null)."""

    prenorm: bool
    dropout: float  # model.dropout (the residual)
    layer_dropout: float  # model.layer.dropout (S4Block's, inside the layer; model.dropout if unset)
    state_size: int
    num_a: int | None
    lr: float | None  # model.layer.lr for a, b, h_0 (null: the global one)
    wd: float | None  # model.layer.wd (null: the global one)
    batch: int
    opt_lr: float
    opt_wd: float
    steps: int
    warmup: int
    max_epochs: int
    seed: int


# all: n_layers 6, norm batch, bidirectional, activation gelu; d_model 256 (cifar: 512)
RTF = {
    "listops": RTFCfg(False, 0.0, 0.0, 4, 1, None, None, 32, 0.002, 0.07, 120_000, 12_000, 40, 3333),
    "imdb": RTFCfg(True, 0.1, 0.1, 4, 1, 0.001, 0.0, 16, 0.005, 0.05, 50_000, 5_000, 32, 3333),
    "aan": RTFCfg(True, 0.0, 0.0, 4, 1, 0.00001, 0.0, 64, 0.002, 0.0, 57_040, 5_704, 20, 3333),
    "cifar": RTFCfg(False, 0.1, 0.1, 64, 1, 0.005, 0.05, 50, 0.006, 0.05, 180_000, 18_000, 200, 2222),
    "pathfinder": RTFCfg(True, 0.1, 0.1, 64, None, None, None, 64, 0.002, 0.05, 500_000, 50_000, 200, 3333),
    "pathx": RTFCfg(True, 0.1, 0.0, 2048, None, 0.001, 0.0, 16, 0.001, 0.025, 500_000, 50_000, 50, 3333),
}

# ---------------------------------------------------------------------------- S5
S5_COMMIT = "3c18fdb6b06414da35e77b94b9cd855f6a95ef17"


@dataclass(frozen=True)
class S5Cfg:
    """One lindermanlab/S5 script, bin/run_experiments/run_lra_<file task>.sh, with
    run_train.py's defaults where the script leaves a flag out (prenorm True, bn_momentum
    0.95, activation_fn half_glu1, dt_min 0.001, dt_max 0.1, dt_global False, lr_min 0)."""

    n_layers: int
    d_model: int
    ssm_size_base: int
    blocks: int
    bsz: int
    lr_factor: float
    ssm_lr_base: float
    p_dropout: float
    weight_decay: float
    epochs: int
    warmup_end: int
    opt_config: str
    dt_global: bool
    clip_eigs: bool
    activation_fn: str
    bn_momentum: float  # flax convention: the weight of the running average
    dt_min: float
    jax_seed: int


S5 = {
    "listops": S5Cfg(8, 128, 16, 8, 50, 3, 0.001, 0.0, 0.04, 40, 1, "BfastandCdecay", False, False, "half_glu2", 0.95,
                     0.001, 6554595),
    "imdb": S5Cfg(6, 256, 192, 12, 50, 4, 0.001, 0.1, 0.07, 35, 0, "standard", True, False, "half_glu2", 0.95, 0.001,
                  8825365),
    "aan": S5Cfg(6, 128, 256, 16, 32, 2, 0.001, 0.0, 0.05, 20, 1, "standard", True, False, "half_glu1", 0.95, 0.001,
                 5464368),
    "cifar": S5Cfg(6, 512, 384, 3, 50, 4.5, 0.001, 0.1, 0.07, 250, 1, "BfastandCdecay", False, True, "half_glu1", 0.95,
                   0.001, 16416),
    "pathfinder": S5Cfg(6, 192, 256, 8, 64, 5, 0.0009, 0.05, 0.03, 200, 1, "standard", False, False, "half_glu1", 0.9,
                        0.001, 8180844),
    "pathx": S5Cfg(6, 128, 256, 16, 32, 3, 0.0006, 0.0, 0.06, 75, 1, "BandCdecay", False, False, "half_glu1", 0.9,
                   0.0001, 6429262),
}


# ---------------------------------------------------------------------------- helpers
def _epochs(steps: int, batch: int, task: str, max_epochs: int) -> int:
    """Epochs the original run trains: its steps over its train set, stopped at max_epochs."""
    return min(max_epochs, round(steps * batch / ORIGINAL_TRAIN[task]))


def _rescaled(task: str, epochs: float, batch: int) -> int:
    """Steps for ``epochs`` of our train split (drop_last batches, as the loop and S5 do)."""
    return int(epochs * (OUR_TRAIN[task] // batch))


def _groups(cfg) -> dict[str, dict]:
    """parameter name -> its optimiser options, for the run's model (built small)."""
    small = compose(cfg.task, cfg.layer, preset="full", overrides=["d_model=16", "n_layers=1"])
    model = build_run_model(resolve(small))
    out = {}
    for g in param_groups(model, small.lr, small.weight_decay, small.param_overrides):
        for name in g["names"]:
            out[name] = {"lr": g["lr"], "weight_decay": g["weight_decay"]}
    return out


def _one(groups: dict[str, dict], suffix: str) -> dict:
    hits = [v for k, v in groups.items() if k.endswith(suffix)]
    assert hits, f"no parameter ends with {suffix!r}"
    assert all(h == hits[0] for h in hits), f"{suffix}: parameters disagree {hits}"
    return hits[0]


def _check_steps(cfg, task, orig_steps, orig_warmup, epochs, batch):
    if OUR_TRAIN[task] == ORIGINAL_TRAIN[task] and epochs == round(orig_steps * batch / ORIGINAL_TRAIN[task]):
        assert (cfg.steps, cfg.warmup_steps) == (orig_steps, orig_warmup)  # same data: the original schedule
    else:  # a substitute: the original epochs over our split, the same warm-up fraction
        assert cfg.steps == _rescaled(task, epochs, batch), (task, cfg.steps)
        assert cfg.warmup_steps == int(cfg.steps * orig_warmup / orig_steps), (task, cfg.warmup_steps)


# ---------------------------------------------------------------------------- tests
def test_layers_map_to_their_recipes():
    assert {layer: recipe_of(layer) for layer in ("s4", "s4d", "rtf", "s5", "mamba", "attention")} == {
        "s4": "s4", "s4d": "s4", "rtf": "rtf", "s5": "s5", "mamba": "common", "attention": "common"}


@pytest.mark.parametrize("layer", ["s4", "s4d"])
@pytest.mark.parametrize("task", LRA)
def test_s4_recipe(layer, task):
    o = S4[FILE_TASK[task]]
    cfg = compose(task, layer, preset="full")
    plan = resolve(cfg)
    lc = plan.layer_config
    assert cfg.recipe == "s4"
    assert cfg.recipe_source.startswith(f"state-spaces/s4@{S4_COMMIT[:7]} configs/experiment/lra/s4-{FILE_TASK[task]}.yaml")
    # the block: BatchNorm where S4 puts it, S4's block without an MLP, S4's dropout (tied)
    assert (cfg.n_layers, cfg.d_model, cfg.norm, cfg.prenorm, cfg.final_norm) == (
        o.n_layers, o.d_model, "batchnorm", o.prenorm, None)
    assert plan.model_options["prenorm"] is o.prenorm and cfg.mlp_ratio == 0 and cfg.tie_dropout
    assert cfg.dropout == o.dropout and lc.dropout == o.dropout and cfg.bn_momentum == 0.1  # nn.BatchNorm1d's
    assert (lc.activation, lc.output) == ("gelu", "glu") and cfg.pool == "mean"
    # the layer
    assert (lc.d_state, lc.init, lc.dt_min, lc.dt_max, lc.bidirectional, lc.n_ssm) == (
        o.d_state, "legs", o.dt_min, 0.1, True, o.n_ssm)
    # optimiser and schedule
    assert (cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.seed) == (o.batch, o.opt_lr, o.wd, o.seed)
    assert (cfg.grad_clip, cfg.min_lr_ratio, cfg.beta1, cfg.beta2) == (0.0, 0.0, 0.9, 0.999)
    _check_steps(cfg, task, o.steps, o.warmup, _epochs(o.steps, o.batch, task, o.max_epochs), o.batch)
    assert cfg.task_options.get("append_eos", False) is o.eos
    # parameter groups: kernel.py register() semantics
    g = _groups(cfg)
    ssm_lr = o.lr["A"] if isinstance(o.lr, dict) else o.lr
    assert _one(g, "mixer.log_A_real") == {"lr": ssm_lr, "weight_decay": 0.0}
    dt_lr = (o.lr["dt"] if isinstance(o.lr, dict) else o.lr) or cfg.lr  # null: the global lr
    assert _one(g, "mixer.log_dt") == {"lr": dt_lr, "weight_decay": 0.0}
    c_lr = cfg.lr if isinstance(o.lr, dict) else o.lr  # a number reaches C too, a dict leaves it global
    assert _one(g, "mixer.C") == {"lr": c_lr, "weight_decay": cfg.weight_decay}
    if layer == "s4":
        assert _one(g, "mixer.B") == {"lr": ssm_lr, "weight_decay": 0.0}
        assert _one(g, "mixer.P") == {"lr": ssm_lr, "weight_decay": 0.0}
    # no-decay rules on the backbone only: BatchNorm and biases inside it undecayed; the
    # encoder, the decoder and D decayed
    assert _one(g, "norm1.weight")["weight_decay"] == 0.0 and _one(g, "post.proj.0.bias")["weight_decay"] == 0.0
    for name in ("encoder.weight", "mixer.D"):
        assert _one(g, name) == {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
    assert all(v["weight_decay"] == cfg.weight_decay for k, v in g.items() if k.startswith("head."))


@pytest.mark.parametrize("task", LRA)
def test_rtf_recipe(task):
    o = RTF[FILE_TASK[task]]
    cfg = compose(task, "rtf", preset="full")
    plan = resolve(cfg)
    lc = plan.layer_config
    assert cfg.recipe == "rtf"
    assert cfg.recipe_source.startswith(
        f"ruke1ire/RTF@{RTF_COMMIT[:7]} experiments/state-spaces/configs/experiment/lra/rtf-{FILE_TASK[task]}.yaml")
    assert (cfg.n_layers, cfg.d_model, cfg.norm, cfg.prenorm, cfg.mlp_ratio, cfg.tie_dropout) == (
        6, 512 if FILE_TASK[task] == "cifar" else 256, "batchnorm", o.prenorm, 0, True)
    assert (cfg.dropout, lc.dropout) == (o.dropout, o.layer_dropout)
    assert (lc.d_state, lc.num_a, lc.bidirectional, lc.init, lc.constraint, lc.activation) == (
        o.state_size, o.num_a, True, "zeros", "none", "gelu")
    assert lc.l_max == plan.info.seq_len  # trunc_len: the dataset's l_max
    assert (cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.seed, cfg.grad_clip) == (
        o.batch, o.opt_lr, o.opt_wd, o.seed, 0.0)
    _check_steps(cfg, task, o.steps, o.warmup, _epochs(o.steps, o.batch, task, o.max_epochs), o.batch)
    assert cfg.task_options.get("append_eos", False) is (FILE_TASK[task] in ("listops", "imdb", "aan"))
    g = _groups(cfg)
    want = {"lr": cfg.lr if o.lr is None else o.lr, "weight_decay": cfg.weight_decay if o.wd is None else o.wd}
    for name in ("mixer.a", "mixer.b", "mixer.h0"):  # rtf_wrapper.py registers ab and h_0 alike
        assert _one(g, name) == want, name
    assert _one(g, "encoder.weight")["weight_decay"] == cfg.weight_decay


@pytest.mark.parametrize("task", LRA)
def test_s5_recipe(task):
    o = S5[FILE_TASK[task]]
    cfg = compose(task, "s5", preset="full")
    plan = resolve(cfg)
    lc = plan.layer_config
    assert cfg.recipe == "s5"
    assert cfg.recipe_source.startswith(
        f"lindermanlab/S5@{S5_COMMIT[:7]} bin/run_experiments/run_lra_{FILE_TASK[task]}.sh")
    # model: pre-norm BatchNorm (flax momentum m is PyTorch's 1 - m), no MLP, no final norm
    assert (cfg.n_layers, cfg.d_model, cfg.norm, cfg.prenorm, cfg.final_norm, cfg.mlp_ratio) == (
        o.n_layers, o.d_model, "batchnorm", True, False, 0)
    assert cfg.bn_momentum == pytest.approx(1 - o.bn_momentum)
    assert (cfg.dropout, lc.dropout, cfg.tie_dropout) == (o.p_dropout, o.p_dropout, True)  # broadcast_dims=[0]
    assert (lc.d_state, lc.blocks, lc.bidirectional, lc.clip_eigs, lc.output, lc.activation) == (
        o.ssm_size_base, o.blocks, True, o.clip_eigs, o.activation_fn, "gelu")
    assert (lc.dt_min, lc.dt_max, lc.conj_sym, lc.discretization, lc.dt_per_state) == (o.dt_min, 0.1, True, "zoh", True)
    # optimiser: lr = lr_factor * ssm_lr_base; epochs and a warm-up of warmup_end epochs over our split
    assert cfg.lr == pytest.approx(o.lr_factor * o.ssm_lr_base) and lc.lr == o.ssm_lr_base
    assert (cfg.batch_size, cfg.weight_decay, cfg.seed, cfg.min_lr_ratio, cfg.grad_clip) == (
        o.bsz, o.weight_decay, o.jax_seed, 0.0, 0.0)
    per_epoch = OUR_TRAIN[task] // o.bsz
    assert (cfg.steps, cfg.warmup_steps) == (o.epochs * per_epoch, o.warmup_end * per_epoch)
    assert cfg.task_options.get("append_eos", False) is (FILE_TASK[task] in ("listops", "imdb", "aan"))
    # parameter groups: train_helpers.create_train_state
    g = _groups(cfg)
    ssm = {"lr": o.ssm_lr_base, "weight_decay": 0.0}  # optax.adam at ssm_lr
    regular = {"lr": cfg.lr, "weight_decay": cfg.weight_decay}  # optax.adamw at lr: every other parameter
    assert _one(g, "mixer.Lambda_re") == ssm and _one(g, "mixer.Lambda_im") == ssm
    assert _one(g, "mixer.log_dt") == (regular if o.dt_global else ssm)
    b = {"standard": ssm, "BandCdecay": {"lr": o.ssm_lr_base, "weight_decay": cfg.weight_decay},
         "BfastandCdecay": regular}[o.opt_config]
    assert _one(g, "mixer.B") == b
    for name in ("mixer.C", "mixer.D", "norm1.weight", "norm1.bias", "encoder.weight", "post.proj.bias"):
        assert _one(g, name) == regular, name


def test_common_recipe_for_the_other_layers():
    """Layers without a recipe run configs/lra as is: seqzoo's block, S4's sizes and optimiser;
    Path-X at S4's current lr; Text and Retrieval rescaled to our data."""
    for task in LRA:
        cfg = compose(task, "mamba", preset="full")
        assert (cfg.recipe, cfg.norm, cfg.prenorm, cfg.mlp_ratio, cfg.param_overrides) == (
            "common", "layernorm", True, 2.0, {})
        assert cfg.recipe_source == f"configs/lra/{task}.yaml (seqzoo's common recipe)"
        s4 = S4[FILE_TASK[task]]
        assert (cfg.n_layers, cfg.d_model, cfg.batch_size, cfg.lr, cfg.weight_decay) == (
            s4.n_layers, s4.d_model, s4.batch, s4.opt_lr, s4.wd)
        _check_steps(cfg, task, s4.steps, s4.warmup, _epochs(s4.steps, s4.batch, task, s4.max_epochs), s4.batch)
    assert compose("pathx", "attention", preset="full").lr == 0.001
    # a layer's recipe covers the LRA tasks only; elsewhere it runs the common recipe
    assert compose("adding", "s4", preset="full").recipe == "common"
    # recipe=common runs a recipe layer on the common recipe
    c = compose("listops", "s4", preset="full", overrides=["recipe=common"])
    assert (c.recipe, c.norm, c.mlp_ratio) == ("common", "layernorm", 2.0)


def test_our_train_sizes():
    """OUR_TRAIN, which the substitutes' step counts are computed from, is what the data
    has (text: this Python's stdlib, checked on the 3.11 the recipes were sized with)."""
    import seqzoo.tasks
    from seqzoo.tasks import get_task

    for task in ("listops", "retrieval", "shapes"):
        assert get_task(task).cls.default_sizes["train"] == OUR_TRAIN[task]
    for task in ("pathfinder", "pathx"):
        assert compose(task, "s4", preset="full").train_size == OUR_TRAIN[task]
    assert len(seqzoo.tasks.build("image", split="train", progress=False, pool=1)) == OUR_TRAIN["image"]
    if sys.version_info[:2] != (3, 11):
        pytest.skip("the text split follows the stdlib; the recipes' Text steps were sized on Python 3.11")
    assert len(seqzoo.tasks.build("text", split="train", progress=False, max_len=4096)) == OUR_TRAIN["text"]


def test_rescaling_arithmetic():
    """The rescaled step counts the recipes state (a second, literal check of the helpers)."""
    assert _rescaled("text", 32, 16) == 11_104 and _rescaled("retrieval", 20, 64) == 15_620
    assert _rescaled("image", 200, 50) == 5_600 and _rescaled("text", 35, 50) == 3_885
    assert _epochs(50_000, 64, "retrieval", 20) == 20 and math.isclose(50_000 * 64 / 147_086, 21.76, abs_tol=0.01)
