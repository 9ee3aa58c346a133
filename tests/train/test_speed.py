"""seqzoo bench modes / speed: parallel vs recurrent on tiny sizes (numbers, not speed)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from seqzoo.cli import app
from seqzoo.speed import compare_modes, modes_table, speed_sweep, speed_tables


def test_compare_modes_agree_and_report():
    rows = compare_modes(["s4d", "attention", "gau"], d_model=16, length=24, repeats=1, progress=False)
    assert [r["layer"] for r in rows] == ["s4d", "attention", "gau"]
    for r in rows:
        assert r["can_step"] and r["max_rel_diff"] < 1e-4, r  # float32: the two forms agree
        assert r["parallel_s"] > 0 and r["recurrent_s"] > 0 and r["step_latency_s"] > 0
    t = modes_table(rows)
    assert t.count("\n") == 4 and "| s4d " in t and "step µs (at t=23)" in t


def test_speed_sweep_covers_lengths_and_positions():
    rows = speed_sweep(["s4d", "linear_attn"], d_model=8, lengths=(8, 32), positions=(0, 16), repeats=1,
                       max_recurrent_length=16, progress=False)
    by_len = {(r["layer"], r["length"]): r for r in rows if r["kind"] == "length"}
    assert set(by_len) == {("s4d", 8), ("s4d", 32), ("linear_attn", 8), ("linear_attn", 32)}
    assert "recurrent_s" in by_len[("s4d", 8)] and "recurrent_s" not in by_len[("s4d", 32)]  # capped at 16
    pos = {(r["layer"], r["position"]) for r in rows if r["kind"] == "position"}
    assert pos == {("s4d", 0), ("s4d", 16), ("linear_attn", 0), ("linear_attn", 16)}
    text = speed_tables(rows)
    assert "step µs at t=16" in text and "| linear_attn | 32 " in text


def test_cli_bench_modes_and_speed_write_files(tmp_path):
    pytest.importorskip("matplotlib")
    runner = CliRunner()
    r = runner.invoke(app, ["bench", "modes", "--layers", "s4d,rtf", "--length", "16", "--d-model", "8",
                            "--repeats", "1", "--out", str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    assert "| rtf " in r.output and (tmp_path / "m" / "modes.png").stat().st_size > 1000
    assert len((tmp_path / "m" / "modes.jsonl").read_text().splitlines()) == 2
    r = runner.invoke(app, ["bench", "speed", "--layers", "s4d", "--lengths", "8,16", "--positions", "1,8",
                            "--d-model", "8", "--repeats", "1", "--out", str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in (tmp_path / "s" / "speed.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and (tmp_path / "s" / "speed.png").stat().st_size > 1000
    r = runner.invoke(app, ["bench", "speed", "--layers", "s4x", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "unknown layer 's4x'" in r.output


def test_demo_prints_every_layer_with_both_forms_agreeing():
    import seqzoo

    res = CliRunner().invoke(app, ["demo", "--d-model", "8", "--length", "12", "--batch", "1"])
    assert res.exit_code == 0, res.output
    rows = {line.split("|")[1].strip(): line.split("|")[3].strip() for line in res.output.splitlines()
            if line.startswith("| ") and "layer" not in line}
    assert set(rows) == set(seqzoo.list_layers())
    assert all(float(rel) < 1e-4 for rel in rows.values()), rows  # max rel diff, parallel vs step loop


def test_decode_sweep_prefill_decode_and_state_memory():
    from seqzoo.speed import decode_sweep, decode_table

    rows = decode_sweep(["mamba", "attention"], d_model=16, n_layers=1, contexts=(8, 40), new_tokens=2, repeats=1,
                        progress=False)
    by = {(r["layer"], r["context"]): r for r in rows}
    assert set(by) == {("mamba", 8), ("mamba", 40), ("attention", 8), ("attention", 40)}
    for r in rows:
        assert r["prefill_s"] > 0 and r["decode_s"] > 0 and r["mode"] == "eager" and r["device"] == "cpu"
        assert abs(r["prefill_tok_s"] - r["context"] / r["prefill_s"]) < 1e-6 * r["prefill_tok_s"]
    # the recurrent state does not grow with the context; attention's KV cache does, by
    # (40 - 8) tokens x (k, v) x 16 floats x 4 bytes (plus one validity byte per token)
    assert by[("mamba", 8)]["state_bytes"] == by[("mamba", 40)]["state_bytes"] > 0
    assert by[("attention", 40)]["state_bytes"] - by[("attention", 8)]["state_bytes"] == 32 * (2 * 16 * 4 + 1)
    text = decode_table(rows)
    assert "| attention | 40 " in text and "40 / 8" in text
    # the weights a step reads: the model's parameters; without the MLP, fewer of them
    import seqzoo

    model = seqzoo.build_model("mamba", d_model=16, n_layers=1, vocab_size=256, head="lm")
    assert by[("mamba", 8)]["param_bytes"] == sum(4 * p.numel() for p in model.parameters())
    no_mlp = decode_sweep(["mamba"], d_model=16, n_layers=1, contexts=(8,), new_tokens=1, repeats=1, progress=False,
                          mlp_ratio=0)
    assert no_mlp[0]["mlp_ratio"] == 0 and no_mlp[0]["param_bytes"] < by[("mamba", 8)]["param_bytes"]


def test_decode_weight_read_floor():
    """The floor reads exactly the matrices a batch-1 step reads whole: every weight of two
    or more dimensions, without an untied embedding table (gathered one row per token), with
    a tied one (the LM head reads it whole); it is timed and reported per row."""
    import seqzoo
    from seqzoo.speed import _step_matrices, decode_sweep, decode_table

    model = seqzoo.build_model("mamba", d_model=16, n_layers=2, vocab_size=256, head="lm")
    embed = model.encoder.weight
    big = sum(p.numel() for p in model.parameters() if p.dim() >= 2)
    mats = _step_matrices(model)
    assert all(w.dim() == 2 for w in mats) and all(w.data_ptr() != embed.data_ptr() for w in mats)
    assert sum(w.numel() for w in mats) == big - embed.numel()
    model.head.weight = embed  # tied: the head reads the table whole
    assert sum(w.numel() for w in _step_matrices(model)) == big - 256 * 16
    rows = decode_sweep(["s4d"], d_model=8, n_layers=1, contexts=(8,), new_tokens=1, repeats=1, progress=False)
    assert rows[0]["read_floor_s"] > 0
    assert "weight-read ms" in decode_table(rows)


def test_cli_bench_decode_and_device_option(tmp_path):
    pytest.importorskip("matplotlib")
    runner = CliRunner()
    r = runner.invoke(app, ["bench", "decode", "--layers", "s4d", "--contexts", "8,16", "--d-model", "8",
                            "--n-layers", "1", "--new-tokens", "2", "--repeats", "1", "--device", "cpu",
                            "--out", str(tmp_path / "d")])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in (tmp_path / "d" / "decode.jsonl").read_text().splitlines()]
    assert [row["context"] for row in rows] == [8, 16] and (tmp_path / "d" / "decode.png").stat().st_size > 1000
    r = runner.invoke(app, ["bench", "modes", "--layers", "s4d", "--length", "8", "--d-model", "8", "--repeats", "1",
                            "--device", "cpu", "--out", str(tmp_path / "m")])
    assert r.exit_code == 0 and json.loads((tmp_path / "m" / "modes.jsonl").read_text())["device"] == "cpu"
    r = runner.invoke(app, ["bench", "decode", "--device", "tpu", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "--device" in r.output
    if not __import__("torch").cuda.is_available():
        r = runner.invoke(app, ["bench", "speed", "--device", "cuda", "--out", str(tmp_path / "x")])
        assert r.exit_code == 2 and "no CUDA device" in r.output
