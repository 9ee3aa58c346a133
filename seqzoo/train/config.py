"""Run configs: one flat dataclass (:class:`RunConfig`) for a model x task training run.

A run is composed, lowest priority first, from

1. the defaults of :class:`RunConfig`,
2. ``configs/lra/<task>.yaml`` (the task's full-size settings: the *common recipe*, which
   borrows S4's published LRA hyper-parameters where they exist),
3. with the full preset, the layer's *recipe*: ``configs/recipes/<recipe>/<task>.yaml``,
   where ``configs/recipes/layers.yaml`` names each layer's recipe (s4 and s4d: S4's own
   configs; rtf: RTF's; s5: S5's run scripts; other layers: none, the common recipe).
   ``recipe=<name>`` among the overrides picks another one (``recipe=common``: none);
4. a preset other than "full" (``configs/presets/<preset>/defaults.yaml``, then
   ``<preset>/<task>.yaml``),
5. overrides ``key=value`` from the command line (``task.<key>=`` and ``layer.<key>=``
   go into ``task_options`` / ``layer_options``).

The layer's own options come from ``configs/layers/<layer>.yaml`` (its ``d_model`` is
replaced by the run's), then ``layer_defaults`` (applied only where the layer's config has
that field: shared names such as ``d_state`` or ``bidirectional``), then
``per_layer[<layer>]`` and ``layer_options`` (both checked strictly). ``l_max``, where a layer has it, follows the task's training length
unless set explicitly.

Everything is validated by :func:`resolve` before any data is generated or any model
built: an unknown layer, task or key, or a value of the wrong type, raises a
:class:`~seqzoo.config.ConfigError` that names the key and the valid choices.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from seqzoo.config import (
    ConfigError,
    closest_hint,
    config_fields,
    config_file,
    config_from_dict,
    configs_dir,
    load_yaml,
    parse_override,
)
from seqzoo.models.backbone import ModelConfig
from seqzoo.registry import get_layer
from seqzoo.registry import make_config as make_layer_config

__all__ = ["RunConfig", "Plan", "configs_dir", "compose", "resolve", "apply_overrides", "list_presets", "list_recipes",
           "recipe_of"]


@dataclass
class RunConfig:
    """Everything one training run needs besides the output folder."""

    task: str
    layer: str = "s4d"
    # seqzoo.tasks options (fields of the task's config dataclass: seed, seq_len, pool, ...)
    task_options: dict = field(default_factory=dict)
    # layer options, checked against the layer's config; override configs/layers/<layer>.yaml
    layer_options: dict = field(default_factory=dict)
    # layer options applied only to layers whose config has the field (d_state, bidirectional, ...)
    layer_defaults: dict = field(default_factory=dict)
    # layer name -> options for that layer only (checked strictly when that layer runs;
    # entries for layers that are not registered are ignored)
    per_layer: dict = field(default_factory=dict)
    # folder of a trained seqzoo.quant.Tokenizer: real-valued inputs go through it (ids in the model)
    tokenizer: str | None = None

    # model (seqzoo.build_model; see seqzoo.models.backbone for the block options)
    d_model: int = 128
    n_layers: int = 4
    dropout: float = 0.0
    norm: Literal["layernorm", "rmsnorm", "batchnorm"] = "layernorm"
    prenorm: bool = True
    final_norm: bool | None = None  # None: a final norm with pre-norm, none with post-norm
    bn_momentum: float = 0.1
    tie_dropout: bool = False
    pool: Literal["mean", "last", "max"] = "mean"
    mlp_ratio: float = 2.0

    # data (None: the task's default size of that split)
    train_size: int | None = None
    val_size: int | None = None
    test_size: int | None = None
    pad_to_max: bool = False  # pad every batch to the task's seq_len (as LRA does) instead of the longest item
    num_workers: int = 0  # DataLoader worker processes

    # optimisation: AdamW, linear warm-up then cosine decay to min_lr_ratio * lr
    steps: int = 1000
    batch_size: int = 32  # global: split evenly over the processes of a distributed run
    lr: float = 1e-3
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.999
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0  # max global gradient norm (0: off)
    # parameter-name glob -> {lr, weight_decay} (null: the run's lr / weight_decay), applied in
    # order after the layers' own hints (e.g. {"blocks.*.mixer.log_dt": {lr: null}})
    param_overrides: dict = field(default_factory=dict)
    # a step whose loss or gradients are NaN/inf: stop with an error naming the step and the
    # first such parameter (the newest checkpoint stays the last good one), or skip its update
    on_nonfinite: Literal["stop", "skip"] = "stop"
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU
    device: Literal["auto", "cpu", "cuda"] = "auto"

    # evaluation, checkpoints, logging (0: only at the end)
    eval_every: int = 0
    # end training at the first validation (every eval_every steps) whose metric reaches this
    # value: accuracy >= stop_at, or MSE <= stop_at (null: always train all the steps)
    stop_at: float | None = None
    # after training, also evaluate the final model on test splits of these sequence lengths
    # (the task's test_seq_len option; e.g. length extrapolation of induction heads)
    eval_lengths: list[int] = field(default_factory=list)
    eval_batch_size: int | None = None  # default: batch_size
    ckpt_every: int = 0
    keep_checkpoints: int = 2
    log_every: int = 50
    seed: int = 0

    # provenance, set by compose: the recipe (configs/recipes/<recipe>/, or "common") and its source
    recipe: str = "common"
    recipe_source: str = ""

    def __post_init__(self):
        for name in ("steps", "batch_size", "d_model", "n_layers", "keep_checkpoints", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "eval_every", "ckpt_every", "num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("train_size", "val_size", "test_size", "eval_batch_size"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be a positive integer or null, got {v}")
        if self.stop_at is not None and not self.eval_every:
            raise ValueError(f"stop_at={self.stop_at} is checked at the validations: set eval_every > 0 as well")
        if self.lr <= 0 or self.weight_decay < 0 or self.grad_clip < 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError("need lr > 0, weight_decay >= 0, grad_clip >= 0 and 0 <= min_lr_ratio <= 1")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError(f"beta1, beta2 must lie in [0, 1), got {self.beta1}, {self.beta2}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")
        for name, opts in self.per_layer.items():
            if not isinstance(opts, dict):
                raise ValueError(f"per_layer.{name} must be a mapping of layer options, got {opts!r}")
        if any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in self.eval_lengths):
            raise ValueError(f"eval_lengths must be a list of positive ints, got {self.eval_lengths!r}")
        if not 0 < self.bn_momentum <= 1:
            raise ValueError(f"bn_momentum must lie in (0, 1], got {self.bn_momentum}")
        for pattern, opts in self.param_overrides.items():
            bad = [k for k in (opts if isinstance(opts, dict) else {}) if k not in ("lr", "weight_decay")]
            if not isinstance(opts, dict) or bad or not all(
                    v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0)
                    for v in opts.values()):
                raise ValueError(f"param_overrides.{pattern} must map lr and/or weight_decay to a number >= 0 or "
                                 f"null (the run's value), got {opts!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------- files
# configs_dir (exported here too) is seqzoo.config's: one lookup of the configs folder for
# layers, tasks, presets and the CLI (a checkout's configs/, else the packaged copy).
def list_presets() -> list[str]:
    root = configs_dir() / "presets"
    return ["full", *sorted(p.name for p in root.iterdir() if p.is_dir())] if root.is_dir() else ["full"]


def list_recipes() -> list[str]:
    """"common" and the folders of ``configs/recipes/``."""
    root = configs_dir() / "recipes"
    return ["common", *sorted(p.name for p in root.iterdir() if p.is_dir())] if root.is_dir() else ["common"]


def recipe_of(layer: str) -> str:
    """The recipe ``layer`` runs under the full preset (``configs/recipes/layers.yaml``;
    "common" for the layers it does not name)."""
    path = configs_dir() / "recipes" / "layers.yaml"
    return str(load_yaml(path).get(layer, "common")) if path.is_file() else "common"


_DICT_KEYS = ("task_options", "layer_options", "layer_defaults", "per_layer", "param_overrides")


def _merge(base: dict[str, Any], extra: dict[str, Any], where: str) -> dict[str, Any]:
    """``extra`` over ``base``; the option dicts are merged key by key."""
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if k in _DICT_KEYS:
            if not isinstance(v, dict):
                raise ConfigError(f"{where}: {k} must be a mapping of options, got {v!r}")
            out[k] = {**out.get(k, {}), **v}
        else:
            out[k] = v
    return out


def apply_overrides(options: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``key=value`` strings over ``options``: ``task.<key>=`` and ``layer.<key>=`` set
    entries of ``task_options`` / ``layer_options``; other keys are RunConfig fields."""
    out = copy.deepcopy(options)
    for text in overrides:
        key, value = parse_override(text)
        if "." in key:
            scope, sub = key.split(".", 1)
            target = {"task": "task_options", "layer": "layer_options", "layer_defaults": "layer_defaults",
                      "task_options": "task_options", "layer_options": "layer_options"}.get(scope)
            if target is None or not sub:
                raise ConfigError(f"override {text!r}: a dotted key must be task.<option> or layer.<option>")
            out.setdefault(target, {})
            out[target] = {**out[target], sub: value}
        else:
            out[key] = value
    return out


def compose(task: str, layer: str | None = None, preset: str = "full",
            overrides: list[str] | tuple[str, ...] = (), config: str | Path | None = None) -> RunConfig:
    """The validated :class:`RunConfig` of ``layer`` x ``task`` under ``preset``.

    ``config``: a YAML file used instead of ``configs/lra/<task>.yaml`` (and of the layer's
    recipe, unless ``recipe=<name>`` asks for one): a path, or the name of a config in
    :func:`~seqzoo.config.configs_dir`'s ``lra/`` (``"listops.yaml"``). ``preset``: "full" (the
    task file, then the layer's recipe) or a folder under ``configs/presets/``."""
    from seqzoo.tasks import get_task

    get_task(task)  # unknown task -> the registered ones
    root = configs_dir()
    path = config_file(config, "lra") if config is not None else root / "lra" / f"{task}.yaml"
    options: dict[str, Any] = {"task": task}
    if path.is_file() or config is not None:
        data = load_yaml(path)
        if data.get("task", task) != task:
            raise ConfigError(f"{path}: task {data['task']!r} does not match the requested task {task!r}")
        options = _merge(options, data, str(path))
    asked = apply_overrides({}, overrides)  # the layer and recipe the command line asks for
    if layer is None:
        layer = asked.get("layer", options.get("layer"))
    where = str(path) if config is not None else f"configs/lra/{task}.yaml"
    if preset == "full":
        recipe = asked.get("recipe", "common" if config is not None else None)  # a config file is the whole run
        options = _apply_recipe({**options, "recipe_source": f"{where} (seqzoo's common recipe)"}, task,
                                layer or RunConfig.layer, recipe)
    else:
        pdir = root / "presets" / preset  # an absolute path (a preset folder elsewhere) stays itself
        shown = f"configs/presets/{preset}" if not Path(preset).is_absolute() else str(pdir)
        options["recipe_source"] = f"{shown}/ over {where}"
        if asked.get("recipe", "common") != "common":
            raise ConfigError(f"recipe={asked['recipe']}: recipes belong to the full preset; preset {preset!r} "
                              "sets its own sizes")
        if not pdir.is_dir():
            raise ConfigError(f"unknown preset {preset!r}. Valid presets: {', '.join(list_presets())}")
        for f in (pdir / "defaults.yaml", pdir / f"{task}.yaml"):
            if f.is_file():
                options = _merge(options, load_yaml(f), str(f))
    if layer is not None:
        options["layer"] = layer
    options = apply_overrides(options, [o for o in overrides if parse_override(o)[0] != "recipe"])
    cfg = config_from_dict(RunConfig, options, context=f"run config ({task})")
    resolve(cfg)  # every remaining check, before any work
    return cfg


def _apply_recipe(options: dict[str, Any], task: str, layer: str, asked: str | None) -> dict[str, Any]:
    """``configs/recipes/<recipe>/<task>.yaml`` over the task file (the full preset). A
    layer's own recipe that has no file for this task (a task outside LRA) leaves the common
    recipe; a recipe asked for by name must have one."""
    name = recipe_of(layer) if asked is None else str(asked)
    if name not in list_recipes():
        raise ConfigError(f"unknown recipe {name!r}.{closest_hint(name, list_recipes())} "
                          f"Valid recipes: {', '.join(list_recipes())}")
    if name == "common":
        return options
    f = configs_dir() / "recipes" / name / f"{task}.yaml"
    if not f.is_file():
        if asked is not None:
            tasks = sorted(p.stem for p in f.parent.glob("*.yaml"))
            raise ConfigError(f"recipe {name!r} has no settings for task {task!r} (it covers {', '.join(tasks)}); "
                              "use recipe=common")
        return options
    data = load_yaml(f)
    if "recipe" in data:
        raise ConfigError(f"{f}: a recipe file must not set 'recipe' (its folder names it)")
    return {**_merge(options, data, str(f)), "recipe": name}


# ---------------------------------------------------------------------------- resolution
@dataclass(frozen=True)
class Plan:
    """A resolved run: what will be built, all of it validated."""

    config: RunConfig
    task_config: Any  # the task's config dataclass instance
    layer_config: Any  # the layer's config dataclass instance
    layer_options: dict  # what build_model gets as layer_options
    model_options: dict  # build_model options except layer_options and the frontend
    info: Any  # TaskInfo of the train split
    eval_info: dict  # split -> TaskInfo


def _layer_file_options(layer: str) -> dict[str, Any]:
    path = configs_dir() / "layers" / f"{layer}.yaml"
    if not path.is_file():
        return {}
    data = load_yaml(path)
    data.pop("layer", None)
    data.pop("d_model", None)
    return data


def resolve(cfg: RunConfig) -> Plan:
    """Check everything a run needs (names, options, shapes of the model) without
    generating data or building modules; return the :class:`Plan`."""
    from seqzoo.tasks import get_task, list_tasks, make_task_config

    spec = get_layer(cfg.layer)  # unknown layer -> the registered ones
    get_task(cfg.task)
    task_cfg = make_task_config(cfg.task, **cfg.task_options)
    task_cls = get_task(cfg.task).cls
    try:  # some checks need the whole task config (e.g. pool must divide Pathfinder's image side)
        info = task_cls.make_info(task_cfg, "train")
        eval_info = {s: task_cls.make_info(task_cfg, s) for s in ("val", "test")}
    except ValueError as e:
        raise ConfigError(f"task {cfg.task!r}: {e}") from None

    if cfg.eval_lengths:
        if "test_seq_len" not in config_fields(type(task_cfg)):
            with_it = [t for t in list_tasks() if "test_seq_len" in config_fields(get_task(t).config)]
            raise ConfigError(f"eval_lengths: task {cfg.task!r} has no test_seq_len option; the tasks that "
                              f"have one: {', '.join(with_it)}")
        for n in cfg.eval_lengths:
            try:
                task_cls.make_info(make_task_config(cfg.task, **{**cfg.task_options, "test_seq_len": n}), "test")
            except ValueError as e:
                raise ConfigError(f"eval_lengths: task {cfg.task!r} at test_seq_len={n}: {e}") from None

    fields = config_fields(spec.config)
    options = _layer_file_options(cfg.layer)
    options.update({k: v for k, v in cfg.layer_defaults.items() if k in fields})
    own = cfg.per_layer.get(cfg.layer, {})
    if "l_max" in fields and not any("l_max" in d for d in (cfg.layer_options, cfg.layer_defaults, own)):
        options["l_max"] = info.seq_len
    options.update(own)
    options.update(cfg.layer_options)
    layer_cfg = make_layer_config(cfg.layer, d_model=cfg.d_model, **options)
    options = {k: v for k, v in dataclasses.asdict(layer_cfg).items() if k != "d_model"}
    if info.target == "sequence" and getattr(layer_cfg, "bidirectional", False):
        raise ConfigError(f"task {cfg.task!r} scores a prediction at every position (causal LM head), but layer "
                          f"{cfg.layer!r} is built with bidirectional=True; set layer.bidirectional=false")

    model_opts = dict(layer=cfg.layer, d_model=cfg.d_model, n_layers=cfg.n_layers, dropout=cfg.dropout,
                      norm=cfg.norm, prenorm=cfg.prenorm, final_norm=cfg.final_norm, bn_momentum=cfg.bn_momentum,
                      tie_dropout=cfg.tie_dropout, pool=cfg.pool, mlp_ratio=cfg.mlp_ratio, **info.model_options())
    if cfg.tokenizer is not None:
        tok_cfg = _tokenizer_config(cfg.tokenizer)
        if info.inputs != "real":
            raise ConfigError(f"tokenizer: task {cfg.task!r} already has token inputs; a tokenizer front end "
                              "takes real-valued signals (image, shapes, pathfinder, pathx, adding)")
        if tok_cfg.d_input != info.d_input:
            raise ConfigError(f"tokenizer: {cfg.tokenizer} takes signals of {tok_cfg.d_input} channel(s), task "
                              f"{cfg.task!r} has {info.d_input}")
        model_opts.pop("d_input")
        model_opts["vocab_size"] = _vocab_size(tok_cfg)
    config_from_dict(ModelConfig, {**model_opts, "layer_options": options}, context=f"model ({cfg.layer} x {cfg.task})")
    return Plan(cfg, task_cfg, layer_cfg, options, model_opts, info, eval_info)


def _tokenizer_config(path: str):
    import json

    from seqzoo.quant.tokenizer import CONFIG, TokenizerConfig

    f = Path(path) / CONFIG
    if not f.is_file():
        raise ConfigError(f"tokenizer = {path!r}: {f} not found; give a folder written by Tokenizer.save "
                          "(e.g. by `seqzoo tokenizer train --out <folder>`)")
    return config_from_dict(TokenizerConfig, json.loads(f.read_text()), context=str(f))


def _vocab_size(tok_cfg) -> int:
    from seqzoo.quant.tokenizer import Tokenizer

    return Tokenizer(tok_cfg).vocab_size  # a few small modules, no data
