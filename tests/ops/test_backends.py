"""Honest backend choice with planted third-party packages (no GPU needed).

The extras (``mamba_ssm`` for selective_scan and ssd, ``causal_conv1d``) serve CUDA tensors;
here their specs are widened to the CPU so that ``auto`` really loads and probes the planted
package on this machine. Each planted package has the real one's import path and
signature, and is broken the way users meet it:

- "kernel missing": the interface imports, its compiled module does not (a
  ``MAMBA_SKIP_CUDA_BUILD`` install, an ABI-mismatched wheel): every call raises;
- "import fails": importing the package itself raises (undefined symbol);
- "wrong": the kernel runs but returns wrong numbers;
- "working": a correct kernel (calls seqzoo's reference), the control that shows the
  tests can tell a ready package from a broken one.
"""

from __future__ import annotations

import logging
import sys
import textwrap

import pytest
import torch

from seqzoo import _ext
from seqzoo.ops import _dispatch, causal_conv1d, selective_scan, ssd
from seqzoo.ops.causal_conv1d import ref as cc_ref
from seqzoo.ops.selective_scan import ref as ss_ref
from seqzoo.ops.ssd import ref as ssd_ref
from tests.helpers import rel_err

BODIES = {
    "kernel missing": """
        try:
            import {cmod}
        except ImportError:
            {cmod} = None

        def {fn}({sig}):
            if {cmod} is None:
                raise ImportError("{cmod} is not installed")
    """,
    "wrong": """
        from {ref_mod} import {ref_fn} as _ref

        def {fn}({sig}):
            return _ref({call}) + 1
    """,
    "working": """
        from {ref_mod} import {ref_fn} as _ref

        def {fn}({sig}):
            return _ref({call})
    """,
}

# op -> the planted module, function, the compiled module it needs, the real package's
# signature, and the call of seqzoo's reference that implements it
PACKAGES = {
    "selective_scan": dict(
        module="mamba_ssm.ops.selective_scan_interface", fn="selective_scan_fn", cmod="selective_scan_cuda",
        sig="u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False",
        ref_mod="seqzoo.ops.selective_scan.ref", ref_fn="selective_scan",
        call="u, delta, A, B, C, D, z, delta_bias, delta_softplus, None, return_last_state",
    ),
    "ssd": dict(
        module="mamba_ssm.ops.triton.ssd_combined", fn="mamba_chunk_scan_combined", cmod="ssd_triton_kernels",
        sig="x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None, seq_idx=None, "
            "cu_seqlens=None, dt_softplus=False, dt_limit=(0.0, float('inf')), return_final_states=False",
        ref_mod="seqzoo.ops.ssd.ref", ref_fn="ssd",
        call="x, dt, A, B, C, chunk_size, initial_states, return_final_states",
    ),
}


def _plant(tmp_path, module: str, body: str) -> None:
    """Write package ``module`` (dotted) under tmp_path with ``body`` as the leaf module."""
    parts = module.split(".")
    folder = tmp_path
    for part in parts[:-1]:
        folder = folder / part
        folder.mkdir(exist_ok=True)
        (folder / "__init__.py").touch()
    (folder / f"{parts[-1]}.py").write_text(textwrap.dedent(body))


@pytest.fixture
def fresh_dispatch(monkeypatch, tmp_path):
    """A clean slate: no cached probe results or log lines, no real package importable,
    the planted packages first on sys.path, and the extras allowed on the CPU."""
    for attr in ("_ready", "_announced", "_explained", "_warned"):
        monkeypatch.setattr(_dispatch, attr, type(getattr(_dispatch, attr))())
    for name in list(sys.modules):
        if name.split(".")[0] in ("mamba_ssm", "causal_conv1d"):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("SEQZOO_BACKEND", raising=False)
    for op in ("selective_scan", "ssd", "causal_conv1d"):
        for spec in _dispatch._EXTRAS[op].values():
            if "cuda" in spec.devices and "cpu" not in spec.devices:
                monkeypatch.setattr(spec, "devices", ("cpu", "cuda"))
    yield tmp_path


def _ss_inputs():
    g = torch.Generator().manual_seed(0)
    return dict(
        u=torch.randn(2, 4, 24, generator=g), delta=torch.rand(2, 4, 24, generator=g), A=-torch.rand(4, 3, generator=g) - 0.5,
        B=torch.randn(2, 3, 24, generator=g), C=torch.randn(2, 3, 24, generator=g), D=torch.randn(4, generator=g),
        delta_softplus=True,
    )


def _ssd_inputs():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 32, 2, 16, generator=g)
    dt = torch.rand(1, 32, 2, generator=g) * 0.5
    A = -torch.rand(2, generator=g) - 0.5
    B, C = torch.randn(1, 32, 1, 16, generator=g), torch.randn(1, 32, 1, 16, generator=g)
    return x, dt, A, B, C


def _own(op: str) -> str:
    if op == "ssd":  # SSD as the compiled selective scan, else the chunked algorithm
        return "scan" if _ext.has_kernel("selective_scan", "cpu") else "chunked"
    return "cpp" if _ext.has_kernel(op, "cpu") else "ref"


@pytest.mark.parametrize("op", ["selective_scan", "ssd"])
@pytest.mark.parametrize("kind", ["kernel missing", "wrong"])
def test_auto_falls_back_from_a_broken_mamba_ssm(fresh_dispatch, caplog, op, kind):
    spec = PACKAGES[op]
    _plant(fresh_dispatch, spec["module"], BODIES[kind].format(**spec))
    with caplog.at_level(logging.INFO, logger="seqzoo"):
        assert _dispatch.select(op, "auto", "cpu") == _own(op)
        assert _dispatch.select(op, "auto", "cpu") == _own(op)  # probed once: no second line
    why = [r for r in caplog.records if "not using mamba_ssm" in r.getMessage()]
    assert len(why) == 1 and why[0].levelno == logging.WARNING
    expect = "is not installed" if kind == "kernel missing" else "differs from the reference"
    assert "probe call on cpu failed" in why[0].getMessage() and expect in why[0].getMessage()
    # an explicit request cannot be honoured: it says what is missing and how to install it
    with pytest.raises(RuntimeError, match=f"backend='mamba_ssm' cannot run here.*{expect}.*pip install --no-build-isolation mamba-ssm"):
        _dispatch.select(op, "mamba_ssm", "cpu")
    # and the op itself still gives the reference's answer through auto
    if op == "selective_scan":
        t = _ss_inputs()
        assert rel_err(selective_scan(**t), ss_ref.selective_scan(**t)) < 1e-5


@pytest.mark.parametrize("op", ["selective_scan", "ssd"])
def test_auto_uses_a_working_extra(fresh_dispatch, caplog, op):
    """The control: a package that loads and passes its probe is used by auto."""
    spec = PACKAGES[op]
    _plant(fresh_dispatch, spec["module"], BODIES["working"].format(**spec))
    with caplog.at_level(logging.INFO, logger="seqzoo"):
        assert _dispatch.select(op, "auto", "cpu") == "mamba_ssm"
    assert not [r for r in caplog.records if "not using" in r.getMessage()]
    if op == "selective_scan":
        t = _ss_inputs()
        assert rel_err(selective_scan(**t), ss_ref.selective_scan(**t)) < 1e-6
    else:
        x, dt, A, B, C = _ssd_inputs()
        assert rel_err(ssd(x, dt, A, B, C, chunk_size=16), ssd_ref.ssd(x, dt, A, B, C)) < 1e-6


def test_package_import_failure_and_absence(fresh_dispatch, caplog):
    """Importing the package raises (an undefined symbol): a warning; not installed at all:
    an info line; explicit requests raise with the install hint either way."""
    (fresh_dispatch / "mamba_ssm").mkdir()
    (fresh_dispatch / "mamba_ssm" / "__init__.py").write_text("raise OSError('selective_scan_cuda.so: undefined symbol: _ZN3c10')\n")
    with caplog.at_level(logging.INFO, logger="seqzoo"):
        assert _dispatch.select("selective_scan", "auto", "cpu") == _own("selective_scan")
        assert _dispatch.select("causal_conv1d", "auto", "cpu") == _own("causal_conv1d")
    msgs = {r.getMessage(): r.levelno for r in caplog.records if "not using" in r.getMessage()}
    broken = [m for m in msgs if "mamba_ssm does not load (OSError" in m and "undefined symbol" in m]
    absent = [m for m in msgs if "causal_conv1d is not installed" in m]
    assert broken and msgs[broken[0]] == logging.WARNING
    assert absent and msgs[absent[0]] == logging.INFO
    with pytest.raises(RuntimeError, match="causal_conv1d is not installed.*pip install --no-build-isolation causal-conv1d"):
        causal_conv1d(torch.randn(1, 8, 5), torch.randn(8, 4), backend="causal_conv1d")


@pytest.mark.parametrize("kind", ["kernel missing", "wrong", "working"])
def test_causal_conv1d_package(fresh_dispatch, kind):
    body = {
        "kernel missing": """
            try:
                import causal_conv1d_cuda
            except ImportError:
                causal_conv1d_cuda = None

            def causal_conv1d_fn(*args, **kwargs):
                raise RuntimeError("causal_conv1d_cuda is not installed")

            causal_conv1d_update = causal_conv1d_fn
        """,
        "wrong": """
            from seqzoo.ops.causal_conv1d import ref

            def causal_conv1d_fn(x, weight, bias=None, seq_idx=None, initial_states=None, return_final_states=False,
                                 final_states_out=None, activation=None):
                return ref.causal_conv1d(x, weight, bias, initial_states, return_final_states, activation) * 2

            def causal_conv1d_update(x, conv_state, weight, bias=None, activation=None):
                return ref.causal_conv1d_update(x, conv_state, weight, bias, activation)[0]
        """,
        "working": """
            from seqzoo.ops.causal_conv1d import ref

            def causal_conv1d_fn(x, weight, bias=None, seq_idx=None, initial_states=None, return_final_states=False,
                                 final_states_out=None, activation=None):
                return ref.causal_conv1d(x, weight, bias, initial_states, return_final_states, activation)

            def causal_conv1d_update(x, conv_state, weight, bias=None, activation=None):
                out, new = ref.causal_conv1d_update(x, conv_state, weight, bias, activation)
                conv_state.copy_(new)  # the package writes in place
                return out
        """,
    }[kind]
    _plant(fresh_dispatch, "causal_conv1d", body)
    ready = kind == "working"
    assert _dispatch.select("causal_conv1d", "auto", "cpu") == ("causal_conv1d" if ready else _own("causal_conv1d"))
    g = torch.Generator().manual_seed(1)
    x, w, s = torch.randn(2, 8, 9, generator=g), torch.randn(8, 4, generator=g), torch.randn(2, 8, 3, generator=g)
    assert rel_err(causal_conv1d(x, w, activation="silu"), cc_ref.causal_conv1d(x, w, activation="silu")) < 1e-5
    # widths the package does not take go to seqzoo's own kernel under auto, and raise when asked for
    w5 = torch.randn(8, 5, generator=g)
    assert rel_err(causal_conv1d(x, w5), cc_ref.causal_conv1d(x, w5)) < 1e-5
    if ready:
        with pytest.raises(ValueError, match="widths 2-4"):
            causal_conv1d(x, w5, backend="causal_conv1d")
        out, new = causal_conv1d.__globals__["causal_conv1d_update"](x[..., 0], s, w, activation="silu")
        want, want_s = cc_ref.causal_conv1d_update(x[..., 0], s, w, None, "silu")
        assert rel_err(out, want) < 1e-6 and torch.equal(new, want_s)
    else:
        with pytest.raises(RuntimeError, match="cannot run here"):
            causal_conv1d(x, w, backend="causal_conv1d")


def test_extras_only_take_their_dtypes(fresh_dispatch):
    """The packages have no float64 kernels: auto passes over a ready extra for float64
    inputs (seqzoo's own kernels take them), and an explicit request says so."""
    spec = PACKAGES["selective_scan"]
    _plant(fresh_dispatch, spec["module"], BODIES["working"].format(**spec))
    assert _dispatch.select("selective_scan", "auto", "cpu", torch.float32) == "mamba_ssm"
    assert _dispatch.select("selective_scan", "auto", "cpu", torch.float64) == _own("selective_scan")
    with pytest.raises(ValueError, match="takes float32, float16, bfloat16 inputs, not float64"):
        _dispatch.select("selective_scan", "mamba_ssm", "cpu", torch.float64)
    t = {k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in _ss_inputs().items()}
    assert rel_err(selective_scan(**t), ss_ref.selective_scan(**t)) < 1e-12  # float64 through seqzoo's own kernel
