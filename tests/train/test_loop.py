"""Pieces of the training loop: optimiser groups, schedule, evaluation metrics and chance
levels (against models whose predictions are known), aux losses, the resumable sampler,
checkpoints, and one short training run."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import seqzoo
from seqzoo.train import RunConfig, compose, resolve, train
from seqzoo.train import checkpoint as ckpt
from seqzoo.train.loop import (
    ResumableSampler,
    _aux_loss,
    build_datasets,
    chance_verdict,
    evaluate,
    lr_lambda,
    param_groups,
    param_hash,
    predict,
    task_loss,
    unpadded,
)


def test_param_groups_honour_optim_hints_and_skip_decay():
    model = seqzoo.build_model("s4d", d_model=16, n_layers=1, vocab_size=10, n_classes=3)
    groups = param_groups(model, lr=0.01, weight_decay=0.05)
    where = {name: (g["lr"], g["weight_decay"]) for g in groups for name in g["names"]}
    assert len(where) == sum(1 for _ in model.parameters())  # every parameter exactly once
    for name, p in model.named_parameters():
        hint = getattr(p, "_optim", None)
        if hint:  # the layer's SSM parameters: their own lr, no decay
            assert where[name] == (hint["lr"], hint["weight_decay"]), name
    assert where["blocks.0.mixer.log_dt"] == (0.001, 0.0)
    assert where["encoder.weight"] == (0.01, 0.0)  # embedding
    assert where["blocks.0.norm1.weight"] == (0.01, 0.0)  # norm
    assert where["head.bias"] == (0.01, 0.0)  # bias
    assert where["head.weight"] == (0.01, 0.05)  # a matrix: decayed
    assert where["blocks.0.mlp.fc.weight"] == (0.01, 0.05)


def test_param_overrides_set_lr_and_weight_decay_by_name():
    """param_overrides: globs over parameter names, applied after the hints in order (later
    wins), null standing for the run's value; a pattern that matches nothing is an error."""
    from seqzoo.config import ConfigError

    model = seqzoo.build_model("s4d", d_model=16, n_layers=2, vocab_size=10, n_classes=3)
    overrides = {"blocks.*.mixer.log_dt": {"lr": None, "weight_decay": 0.0},  # S4's lr.dt: null
                 "encoder.*": {"weight_decay": None},
                 "blocks.1.*": {"lr": 0.5},
                 "blocks.1.mixer.C": {"lr": None}}
    groups = param_groups(model, lr=0.01, weight_decay=0.05, overrides=overrides)
    where = {name: (g["lr"], g["weight_decay"]) for g in groups for name in g["names"]}
    assert len(where) == sum(1 for _ in model.parameters())
    assert where["blocks.0.mixer.log_dt"] == (0.01, 0.0)  # the run's lr, no decay
    assert where["blocks.0.mixer.log_A_real"] == (0.001, 0.0)  # the hint, untouched
    assert where["encoder.weight"] == (0.01, 0.05)  # decayed like a matrix
    assert where["blocks.1.mixer.log_dt"] == (0.5, 0.0)  # a later pattern wins
    assert where["blocks.1.mixer.C"] == (0.01, 0.05)
    assert where["blocks.1.norm1.weight"] == (0.5, 0.0)  # only the lr was overridden
    assert where["head.weight"] == (0.01, 0.05)
    with pytest.raises(ConfigError, match=r"param_overrides: 'blocks.\*.mixer.log_delta' matches no trainable "
                                          r"parameter.*names look like encoder.weight"):
        param_groups(model, 0.01, 0.05, {"blocks.*.mixer.log_delta": {"lr": None}})
    for bad in ({"momentum": 0.9}, {"lr": -1.0}, 0.1, {"lr": True}):
        with pytest.raises(ValueError, match="param_overrides.x must map lr and/or weight_decay"):
            RunConfig(task="listops", param_overrides={"x": bad})


def test_param_groups_leave_out_frozen_parameters():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    model[0].requires_grad_(False)
    names = [n for g in param_groups(model, 1e-3, 0.1) for n in g["names"]]
    assert names == ["1.weight", "1.bias"]


def test_lr_schedule_warmup_then_cosine():
    f = lr_lambda(steps=100, warmup=10, min_ratio=0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the cosine
    assert f(100) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)
    g = lr_lambda(steps=50, warmup=0, min_ratio=0.0)
    assert g(0) == pytest.approx(1.0) and g(25) == pytest.approx(0.5) and g(50) == pytest.approx(0.0, abs=1e-12)


def test_chance_verdict():
    # accuracy: chance + 2 binomial standard errors
    assert chance_verdict("accuracy", 0.55, 0.5, 1000)  # 0.5 + 2 * 0.0158 = 0.532
    assert not chance_verdict("accuracy", 0.53, 0.5, 1000)
    assert not chance_verdict("accuracy", 0.55, 0.5, 100)  # 0.5 + 0.1 = 0.6
    # mse: below the variance by two standard errors of a sample variance
    assert chance_verdict("mse", 0.14, 0.16, 1000)  # 0.16 * (1 - 0.089) = 0.1457
    assert not chance_verdict("mse", 0.15, 0.16, 1000)
    assert not chance_verdict("accuracy", float("nan"), 0.1, 1000)
    assert not chance_verdict("accuracy", 1.0, 0.1, 0)


class _Constant(nn.Module):
    """Ignores its input; outputs fixed logits / values of the right shape."""

    def __init__(self, target: str, n_out: int, value):
        super().__init__()
        self.target, self.n_out, self.value = target, n_out, value
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, inputs, lengths=None, positions=None):
        x = inputs[0] if isinstance(inputs, tuple) else inputs
        B = x.shape[0]
        if self.target == "regression":
            return torch.full((B, 1), float(self.value)), None
        if self.target == "sequence":  # the trainer asks for the scored positions only
            logits = torch.zeros(B, x.shape[1], self.n_out)
            logits[..., self.value] = 1.0
            return logits[positions], None
        logits = torch.zeros(B, self.n_out)
        logits[:, self.value] = 1.0
        return logits, None


def _labels(ds):
    return [ds[i][1] for i in range(len(ds))]


@pytest.mark.parametrize("task", ["listops", "induction_heads", "adding"])
def test_evaluate_metric_and_chance_match_the_labels(task, data_root):
    """With a model that always predicts the same thing, accuracy / MSE and the chance
    level follow from the labels alone (class: majority rate; sequence: 1/n_classes and
    -100 positions unscored; regression: the variance)."""
    plan = resolve(compose(task, "s4d", preset="quick", overrides=["val_size=37", "test_size=37", "train_size=64",
                                                                   "batch_size=8"]))
    ds = build_datasets(plan, data_root, progress=False)["val"]
    labels = _labels(ds)
    info = ds.info
    if info.target == "class":
        counts = torch.bincount(torch.tensor(labels), minlength=info.n_classes)
        k = int(counts.argmax())
        r = evaluate(_Constant("class", info.n_classes, k), ds, plan, "val")
        assert r["value"] == pytest.approx(int(counts[k]) / len(labels))
        assert r["chance"] == pytest.approx(int(counts.max()) / len(labels)) and r["n"] == len(labels)
        assert r["normalised"] == pytest.approx(0.0)  # the majority predictor is chance
    elif info.target == "sequence":
        flat = torch.cat(labels)
        scored = flat[flat != -100]
        r = evaluate(_Constant("sequence", info.n_classes, 3), ds, plan, "val")
        assert r["n"] == scored.numel() == len(labels)  # induction heads: one scored position per item
        assert r["value"] == pytest.approx(float((scored == 3).float().mean()))
        assert r["chance"] == pytest.approx(1 / info.n_classes)
    else:
        y = torch.tensor(labels, dtype=torch.float64)
        r = evaluate(_Constant("regression", 1, 0.9), ds, plan, "val")
        assert r["value"] == pytest.approx(float(((0.9 - y) ** 2).mean()), rel=1e-5)
        assert r["chance"] == pytest.approx(float(y.var(unbiased=False)), rel=1e-5)
        assert r["metric"] == "mse"


def test_sequence_loss_scores_the_labelled_positions_only():
    """The trainer runs the head at the scored positions only; its loss is the
    ignore_index cross-entropy over the full logits."""
    torch.manual_seed(0)
    model = seqzoo.build_model("s4d", d_model=8, n_layers=1, vocab_size=6, head="lm").double()
    x = torch.randint(0, 6, (4, 12))
    labels = torch.full((4, 12), -100)
    labels[:, -3:] = torch.randint(0, 6, (4, 3))
    labels[0, 2] = 5
    pred, scored = predict(model, x, None, labels, "sequence", -100)
    assert pred.shape == (13, 6) and scored.tolist() == labels[labels != -100].tolist()
    full, _ = model(x)
    want = torch.nn.functional.cross_entropy(full.reshape(-1, 6), labels.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(task_loss(pred, scored, "sequence"), want.float())


def test_unpadded_drops_lengths_only_when_no_row_is_padded():
    x = torch.zeros(3, 5, dtype=torch.long)
    assert unpadded(x, torch.tensor([5, 5, 5])) is None
    short = torch.tensor([5, 4, 5])
    assert unpadded(x, short) is short
    assert unpadded(torch.zeros(2, 5, 3), torch.tensor([5, 5])) is None  # real inputs (B, L, C)
    pair = unpadded((x, torch.zeros(3, 7, dtype=torch.long)), (torch.tensor([5, 5, 5]), torch.tensor([7, 6, 7])))
    assert pair[0] is None and pair[1].tolist() == [7, 6, 7]
    assert unpadded(x, None) is None


@pytest.mark.parametrize("layer", seqzoo.list_layers())
def test_full_lengths_and_no_lengths_give_the_same_output(layer):
    """What unpadded relies on, for every registered layer in training mode: with every row
    full, masking changes nothing, neither the output nor what the call updates (e.g.
    Transformer-VQ's codebook statistics), bit for bit."""
    import copy

    torch.manual_seed(0)
    model = seqzoo.build_model(layer, d_model=16, n_layers=2, vocab_size=7, head="lm")
    twin = copy.deepcopy(model)
    x = torch.randint(0, 7, (3, 10))
    torch.manual_seed(1)
    with_lengths, _ = model(x, lengths=torch.full((3,), 10))
    torch.manual_seed(1)
    without, _ = twin(x)
    assert torch.equal(with_lengths, without)
    after, twin_after = model.state_dict(), twin.state_dict()
    assert all(torch.equal(after[k], twin_after[k]) for k in after)


def test_aux_loss_is_collected_once():
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    a.aux_loss = torch.tensor(0.5)
    b.aux_loss = torch.tensor(0.25)
    model = nn.Sequential(a, b, nn.ReLU())
    assert float(_aux_loss(model)) == pytest.approx(0.75)
    assert _aux_loss(model) is None  # cleared: a stale value is never counted twice


def test_transformer_vq_aux_loss_reaches_the_training_loss(data_root):
    """A layer that sets aux_loss (Transformer-VQ's commitment loss) has it added."""
    model = seqzoo.build_model("transformer_vq", d_model=16, n_layers=1, vocab_size=8, n_classes=2,
                               layer_options={"n_codes": 8, "block_size": 8, "head_dim": 8, "commit_weight": 1.0})
    model(torch.randint(0, 8, (2, 16)))
    aux = _aux_loss(model)
    assert aux is not None and aux.requires_grad and float(aux.detach()) > 0


def test_resumable_sampler_takes_the_rest_of_the_epoch():
    data = list(range(50))
    full = ResumableSampler(data, num_replicas=2, rank=1, seed=3)
    full.set_epoch(4)
    order = list(full)
    assert len(order) == 25
    part = ResumableSampler(data, num_replicas=2, rank=1, seed=3)
    part.set_epoch(4)
    part.start = 10
    assert list(part) == order[10:] and len(part) == 15
    other = ResumableSampler(data, num_replicas=2, rank=0, seed=3)
    other.set_epoch(4)
    assert sorted(order + list(other)) == data  # the two ranks split one permutation
    full.set_epoch(5)
    assert list(full) != order  # a new order every epoch


def test_checkpoints_are_complete_or_absent(tmp_path):
    model = nn.Linear(3, 2)
    assert ckpt.latest(tmp_path) is None
    ckpt.save(tmp_path, 5, model, {"step": 5}, keep=2)
    # a crashed write leaves only a temporary folder, which is never taken for a checkpoint
    (tmp_path / "checkpoints" / ".tmp-step-00000010-xyz").mkdir()
    (tmp_path / "checkpoints" / "step-00000012").mkdir()  # incomplete (no files)
    assert ckpt.latest(tmp_path).name == "step-00000005"
    with torch.no_grad():
        model.weight.add_(1.0)
    ckpt.save(tmp_path, 10, model, {"step": 10}, keep=2)
    ckpt.save(tmp_path, 15, model, {"step": 15}, keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith("step-0000001"))
    assert "step-00000010" in names and "step-00000015" in names
    assert not (tmp_path / "checkpoints" / "step-00000005").exists()  # pruned to the last 2
    fresh = nn.Linear(3, 2)
    state = ckpt.load(ckpt.latest(tmp_path), fresh)
    assert state["step"] == 15 and torch.equal(fresh.weight, model.weight)
    with pytest.raises(RuntimeError, match="does not match the model"):
        ckpt.load(ckpt.latest(tmp_path), nn.Linear(3, 3, bias=False))


def test_param_hash_sees_every_parameter():
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    assert param_hash(a) == param_hash(b)
    with torch.no_grad():
        b.bias[1] += 1e-7
    assert param_hash(a) != param_hash(b)


def test_stop_at_ends_training_at_the_first_validation_that_reaches_it(tmp_path, data_root):
    """stop_at: accuracy >= it at a validation ends training there (a target of 0 at the
    first one); the resumed run stays stopped; a target never reached trains every step;
    stop_at without validations is refused."""
    base = ["steps=30", "log_every=5", "eval_every=10", "train_size=64", "val_size=16", "test_size=16",
            "batch_size=8", "d_model=16", "n_layers=1"]
    cfg = compose("mqar", "s4d", preset="quick", overrides=[*base, "stop_at=0.0"])
    r = train(cfg, tmp_path / "a", progress=False, log=lambda *a: None, data_root=data_root)
    assert r["steps"] == 10 and r["stopped_at_target"] and [e["step"] for e in r["evals"]] == [10]
    events = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert {"event": "stop_at", "step": 10, "value": r["evals"][0]["value"], "stop_at": 0.0} in events
    again = train(cfg, tmp_path / "a", progress=False, log=lambda *a: None, data_root=data_root)
    assert again["steps"] == 10 and again["param_hashes"] == r["param_hashes"]
    never = train(compose("mqar", "s4d", preset="quick", overrides=[*base, "stop_at=1.01"]), tmp_path / "b",
                  progress=False, log=lambda *a: None, data_root=data_root)
    assert never["steps"] == 30 and not never["stopped_at_target"] and len(never["evals"]) == 2
    with pytest.raises(Exception, match="stop_at=0.9 is checked at the validations: set eval_every > 0"):
        train(compose("mqar", "s4d", preset="quick", overrides=["stop_at=0.9", "eval_every=0"]), None,
              progress=False, log=lambda *a: None, data_root=data_root)


def test_a_short_run_learns_and_writes_its_results(tmp_path, data_root):
    """s4d on quick ListOps for 60 steps: the loss falls, the folder holds config, log,
    checkpoint and result; a second call with the same folder resumes at the end."""
    cfg = compose("listops", "s4d", preset="quick", overrides=["steps=60", "log_every=10", "ckpt_every=30",
                                                               "train_size=512", "test_size=200"])
    r = train(cfg, tmp_path / "run", progress=False, log=lambda *a: None, data_root=data_root)
    losses = [h["loss"] for h in r["history"]]
    assert len(losses) == 6 and losses[-1] < losses[0] - 0.1
    assert r["steps"] == 60 and r["resumed_from"] is None and r["test"]["n"] == 200
    assert math.isfinite(r["value"]) and 0 <= r["value"] <= 1
    for f in ("config.json", "log.jsonl", "result.json"):
        assert (tmp_path / "run" / f).is_file()
    assert ckpt.latest(tmp_path / "run").name == "step-00000060"
    again = train(cfg, tmp_path / "run", progress=False, log=lambda *a: None, data_root=data_root)
    assert again["resumed_from"].endswith("step-00000060") and again["param_hashes"] == r["param_hashes"]
    other = compose("listops", "s4d", preset="quick", overrides=["steps=61"])
    with pytest.raises(Exception, match="holds a run with a different config .*steps"):
        train(other, tmp_path / "run", progress=False, log=lambda *a: None, data_root=data_root)
