"""scripts/gpu_check.py, the one command for a GPU machine, tried on the CPU: its report
machinery runs, its reference section checks every op against its reference (and the
numbers it prints are right), and without a GPU it says what to do instead."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _rows(out: Path, key: str) -> list[dict]:
    return json.loads((out / "report.json").read_text())[key]


def test_reference_section_on_cpu(tmp_path):
    rc = _script().main(["--device", "cpu", "--quick", "--skip-build", "--skip-tests", "--only", "env,reference",
                         "--out", str(tmp_path)])
    assert rc == 0
    report = (tmp_path / "report.md").read_text()
    assert "## Environment" in report and "## Kernels against their references" in report
    rows = _rows(tmp_path, "kernels_vs_reference")
    ops = {r["op (size)"].split(" (")[0].split(" ")[0] for r in rows}
    assert ops >= {"diag_scan", "selective_scan", "cauchy", "vandermonde", "causal_conv1d", "ssd", "linear_attn"}
    for r in rows:
        assert not r["fwd rel err"].startswith("error"), r
        assert float(r["fwd rel err"]) < 1e-12 and float(r["bwd rel err"]) < 1e-12, r


@pytest.mark.slow
def test_whole_report_on_cpu(tmp_path):
    """Every section at the quick sizes (about a minute on 2 cores): no measurement fails."""
    assert _script().main(["--device", "cpu", "--quick", "--skip-build", "--skip-tests", "--out", str(tmp_path)]) == 0
    for key in ("kernels_vs_peers", "layers"):
        for r in _rows(tmp_path, key):
            assert not any(v.startswith("error") for v in r.values()), r
    import seqzoo

    assert [r["layer"] for r in _rows(tmp_path, "layers")] == seqzoo.list_layers()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_without_a_gpu_it_says_what_to_do(capsys):
    assert _script().main(["--skip-build", "--skip-tests"]) == 2
    assert "--device cpu --quick" in capsys.readouterr().err
