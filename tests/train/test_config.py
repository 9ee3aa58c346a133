"""Run configs: composition order, overrides, and bad configs failing before any work with
an error that names the key and the valid choices."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

import seqzoo
import seqzoo.tasks
from seqzoo.cli import app
from seqzoo.config import ConfigError
from seqzoo.train import RunConfig, compose, configs_dir, resolve
from seqzoo.train.config import apply_overrides
from seqzoo.train.loop import build_run_model


def test_every_task_has_a_full_config_and_every_cell_resolves():
    """configs/lra/<task>.yaml exists for every registered task, and every layer x task of
    both presets validates (S4's LRA settings: checked on two of them)."""
    for task in seqzoo.tasks.list_tasks():
        assert (configs_dir() / "lra" / f"{task}.yaml").is_file(), task
        for preset in ("full", "quick"):
            for layer in seqzoo.list_layers():
                resolve(compose(task, layer, preset=preset))
    lo = compose("listops", "s4", preset="full")
    assert (lo.d_model, lo.n_layers, lo.batch_size, lo.lr, lo.weight_decay, lo.steps, lo.warmup_steps) == (
        256, 6, 32, 0.01, 0.05, 120_000, 12_000)
    plan = resolve(lo)
    assert plan.layer_config.d_state == 4 and plan.layer_config.lr == 0.001 and plan.layer_config.bidirectional
    px = resolve(compose("pathx", "s4d", preset="full"))
    assert px.info.seq_len == 128 * 128 and px.layer_config.dt_min == 0.0001 and px.config.batch_size == 16


def test_composition_order_and_layer_options():
    """lra file < preset < overrides; layer yaml < layer_defaults (where the field exists) <
    per_layer < layer_options; l_max follows the task's length unless given."""
    cfg = compose("adding", "s4d", preset="quick", overrides=["steps=7", "task.seq_len=40", "layer.d_state=8"])
    assert cfg.steps == 7 and cfg.d_model == 32  # override, quick preset
    assert cfg.task_options == {"seq_len": 40, "test_seq_len": 64}  # quick file + override merged
    plan = resolve(cfg)
    assert plan.info.seq_len == 40 and plan.eval_info["test"].seq_len == 64
    assert plan.layer_config.d_state == 8  # layer_options beat the preset's layer_defaults (16)
    assert plan.layer_config.init == "lin"  # from configs/layers/s4d.yaml
    # layer_defaults skip layers without the field: attention has no d_state
    assert "d_state" not in resolve(compose("adding", "attention", preset="quick")).layer_options
    # l_max follows the task
    assert resolve(compose("adding", "rtf", preset="quick")).layer_config.l_max == 64
    assert resolve(compose("adding", "rtf", preset="quick", overrides=["layer.l_max=100"])).layer_config.l_max == 100
    # per_layer applies to its layer only
    q = resolve(compose("pathfinder", "transnormer", preset="quick"))
    assert q.layer_config.attention == "diag"
    assert resolve(compose("text", "transnormer", preset="quick")).layer_config.attention == "norm"
    assert resolve(compose("listops", "s5", preset="full")).layer_config.d_state == 16


def test_override_parsing():
    out = apply_overrides({"task_options": {"a": 1}}, ["lr=1e-3", "task.b=[1, 2]", "layer.init=inv", "tokenizer=null"])
    assert out == {"task_options": {"a": 1, "b": [1, 2]}, "lr": 1e-3, "layer_options": {"init": "inv"},
                   "tokenizer": None}
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["lr"])
    with pytest.raises(ConfigError, match=r"task.<option> or layer.<option>"):
        apply_overrides({}, ["model.d=3"])


@pytest.mark.parametrize(
    "layer, task, overrides, match",
    [
        ("s4dd", "listops", [], r"unknown layer 's4dd'\. Did you mean 's4d'\?.*Registered layers: attention, .*s4d"),
        ("s4d", "listopz", [], r"unknown task 'listopz'\. Did you mean 'listops'\?.*Registered tasks: adding, .*listops"),
        ("s4d", "listops", ["stepz=3"], r"unknown option 'stepz'\. Did you mean 'steps'\?.*Valid options: .*batch_size"),
        ("s4d", "listops", ["lr=fast"], r"option lr = 'fast' must be a number"),
        ("s4d", "listops", ["steps=1.5"], r"option steps = 1.5 must be an integer"),
        ("s4d", "listops", ["precision=fp16"], r"precision = 'fp16' is not one of 'auto', 'fp32', 'bf16'"),
        ("s4d", "listops", ["task.max_lenght=9"], r"task 'listops': unknown option 'max_lenght'.*Valid options: .*max_length"),
        ("s4d", "listops", ["layer.d_stat=9"], r"layer 's4d': unknown option 'd_stat'\. Did you mean 'd_state'\?"),
        ("s4d", "listops", ["layer.init=nope"], r"init = 'nope' is not one of 'lin', 'inv', 'legs', 'real'"),
        ("s4d", "pathfinder", ["task.pool=3"], r"task 'pathfinder': pool = 3 must divide the image side 16; valid: 1, 2, 4, 8, 16"),
        ("s4d", "mqar", ["layer.bidirectional=true"], r"bidirectional=True; set layer.bidirectional=false"),
        ("s4d", "listops", ["tokenizer=/nonexistent"], r"tokenizer = '/nonexistent'.*config.json not found"),
        ("s4d", "listops", ["steps=0"], r"steps must be >= 1"),
    ],
)
def test_bad_configs_fail_before_any_work(layer, task, overrides, match, data_root):
    before = sorted(p.name for p in data_root.rglob("*"))
    with pytest.raises(ConfigError, match=match):
        compose(task, layer, preset="quick", overrides=overrides)
    assert sorted(p.name for p in data_root.rglob("*")) == before  # nothing generated


def test_bad_preset_and_config_file(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown preset 'quik'\. Valid presets: full, papers, quick"):
        compose("listops", "s4d", preset="quik")
    f = tmp_path / "run.yaml"
    f.write_text("task: text\nsteps: 3\n")
    with pytest.raises(ConfigError, match="task 'text' does not match the requested task 'listops'"):
        compose("listops", "s4d", config=f)
    f.write_text("task: listops\nbatch_size: many\n")
    with pytest.raises(ConfigError, match="option batch_size = 'many' must be an integer"):
        compose("listops", "s4d", config=f)


def test_recipes_belong_to_the_full_preset():
    """A recipe is picked per layer under the full preset, or by name (recipe=...); a bad
    name, a recipe under another preset, or a recipe without settings for the task is an
    error that says what to do."""
    assert compose("listops", "s4", preset="full").recipe == "s4"
    assert compose("listops", "s4d", preset="full", overrides=["recipe=common"]).recipe == "common"
    with pytest.raises(ConfigError, match=r"unknown recipe 's44'\. Did you mean 's4'\?.*Valid recipes: common, rtf, "
                                          r"s4, s5"):
        compose("listops", "s4", preset="full", overrides=["recipe=s44"])
    with pytest.raises(ConfigError, match="recipes belong to the full preset"):
        compose("listops", "s4", preset="quick", overrides=["recipe=s4"])
    with pytest.raises(ConfigError, match="recipe 's4' has no settings for task 'adding'.*use recipe=common"):
        compose("adding", "s4", preset="full", overrides=["recipe=s4"])
    with pytest.raises(ConfigError, match="layer 'mamba': unknown option"):
        compose("listops", "mamba", preset="full", overrides=["recipe=s4"])  # S4's recipe needs an S4 layer


def test_quick_preset_keeps_the_common_block():
    """The quick preset is untouched by the recipes: every cell keeps seqzoo's pre-norm
    LayerNorm block with its gated MLP, no optimiser overrides, no EOS."""
    for task in seqzoo.tasks.list_tasks():
        for layer in seqzoo.list_layers():
            c = compose(task, layer, preset="quick")
            assert (c.recipe, c.norm, c.prenorm, c.final_norm, c.mlp_ratio, c.tie_dropout, c.bn_momentum) == (
                "common", "layernorm", True, None, 2.0, False, 0.1)
            assert c.param_overrides == {} and "append_eos" not in c.task_options
            assert c.recipe_source == f"configs/presets/quick/ over configs/lra/{task}.yaml"


def test_a_preset_folder_elsewhere_is_named_by_its_path(tmp_path):
    import shutil

    folder = tmp_path / "mine"
    shutil.copytree(seqzoo.config.configs_dir() / "presets" / "quick", folder)
    (folder / "defaults.yaml").write_text((folder / "defaults.yaml").read_text() + "\nseed: 7\n")
    c = compose("listops", "s4d", preset=str(folder))
    assert c.seed == 7 and c.recipe_source == f"{folder}/ over configs/lra/listops.yaml"


def test_cli_rejects_bad_configs_before_work(tmp_path, data_root):
    """`seqzoo train` and `seqzoo bench lra` exit with code 2 and the message; no run
    folder and no data appear."""
    runner = CliRunner()
    out = tmp_path / "run"
    r = runner.invoke(app, ["train", "--task", "listops", "--layer", "mamba9", "--out", str(out), "steps=3"])
    assert r.exit_code == 2 and "unknown layer 'mamba9'" in r.output and "Registered layers:" in r.output
    r = runner.invoke(app, ["train", "--task", "adding", "--out", str(out), "batch_size=big"])
    assert r.exit_code == 2 and "batch_size = 'big' must be an integer" in r.output
    r = runner.invoke(app, ["bench", "lra", "--layers", "s4d,atention", "--out", str(out)])
    assert r.exit_code == 2 and "unknown layer 'atention'. Did you mean 'attention'?" in r.output
    r = runner.invoke(app, ["bench", "lra", "--tasks", "adding", "--out", str(out), "n_layer=2"])
    assert r.exit_code == 2 and "unknown option 'n_layer'. Did you mean 'n_layers'?" in r.output
    assert not out.exists()


def test_run_config_checks_values():
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        RunConfig(task="adding", batch_size=0)
    with pytest.raises(ValueError, match=r"dropout must lie in \[0, 1\)"):
        RunConfig(task="adding", dropout=1.0)
    with pytest.raises(ValueError, match="per_layer.s4d must be a mapping"):
        RunConfig(task="adding", per_layer={"s4d": 3})
    with pytest.raises(ValueError, match=r"bn_momentum must lie in \(0, 1\]"):
        RunConfig(task="adding", bn_momentum=0.0)


def test_cli_list_shows_layers_and_tasks():
    r = CliRunner().invoke(app, ["list"])
    assert r.exit_code == 0
    for name in [*seqzoo.list_layers(), *seqzoo.tasks.list_tasks()]:
        assert f"  {name} " in r.output
    assert r.output.index("layers:") < r.output.index("tasks:")


def test_cli_train_dry_run_builds_the_model():
    r = CliRunner().invoke(app, ["train", "--task", "listops", "--layer", "s4d", "--dry-run", "d_model=16",
                                 "n_layers=1"])
    assert r.exit_code == 0, r.output
    model = build_run_model(resolve(compose("listops", "s4d", overrides=["d_model=16", "n_layers=1"])))
    n = sum(p.numel() for p in model.parameters())
    assert f"{n:,} parameters" in r.output and "train L=2048" in r.output
    assert "recipe s4: state-spaces/s4@e757cef configs/experiment/lra/s4-listops.yaml" in r.output
    assert torch.get_num_threads() >= 1
