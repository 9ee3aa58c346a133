"""The chunked SSD algorithm (Mamba-2) and SSD as a compiled selective scan against the loop
reference (seqzoo/ops/ssd/ref.py).

The chunked algorithm is pure PyTorch: its comparisons run on every device in
``tests.helpers.DEVICES`` (on CUDA with the ``cuda`` marker, skipped without a GPU); the scan
backend is the CPU kernel of the extension."""

from __future__ import annotations

import importlib

import pytest
import torch

from seqzoo import _ext
from seqzoo.ops import _dispatch, ssd
from seqzoo.ops.ssd import ref, ssd_chunked, ssd_scan
from tests.helpers import DEVICES, rel_err

ssd_mod = importlib.import_module("seqzoo.ops.ssd")  # the module (seqzoo.ops.ssd is also the function)
needs_scan = pytest.mark.skipif(not _ext.has_kernel("selective_scan", "cpu"), reason="no compiled CPU selective scan")


def _inputs(B=2, L=29, H=4, P=3, G=2, N=5, dtype=torch.float64, seed=0, requires_grad=True, device="cpu"):
    """Generated on the CPU (the same values on every device), then moved to ``device``."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    t = dict(
        x=r(B, L, H, P),
        dt=torch.rand(B, L, H, generator=g, dtype=torch.float64) * 0.5 + 0.01,
        A=-torch.rand(H, generator=g, dtype=torch.float64) * 3 - 0.1,
        B=r(B, L, G, N),
        C=r(B, L, G, N),
        initial_state=r(B, H, P, N),
    )
    return {k: v.to(device, dtype).requires_grad_(requires_grad) for k, v in t.items()}


def _run(fn, t, chunk, seed=7):
    y, S = fn(t["x"], t["dt"], t["A"], t["B"], t["C"], chunk, t["initial_state"], True)
    g = torch.Generator().manual_seed(seed)
    gy = torch.randn(y.shape, generator=g, dtype=y.dtype).to(y.device)
    gS = torch.randn(S.shape, generator=g, dtype=S.dtype).to(y.device)
    loss = (y * gy).sum() + (S * gS).sum()
    return y, S, torch.autograd.grad(loss, list(t.values()))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("L", [29, 50])
@pytest.mark.parametrize("chunk", [1, 3, 7, 16, 64])
def test_chunked_equals_recurrence(L, chunk, device):
    """Chunk sizes that divide L, that do not, and that exceed it."""
    t = _inputs(L=L, device=device)
    y, S, g = _run(ssd_chunked, t, chunk)
    y_r, S_r, g_r = _run(ref.ssd, t, chunk)
    assert rel_err(y, y_r) < 1e-12 and rel_err(S, S_r) < 1e-12
    for name, a, b in zip(t, g, g_r):
        assert rel_err(a, b) < 1e-11, f"d{name}"


# backend="chunked" rather than "auto": on a GPU, auto prefers mamba_ssm's Triton kernels
# when installed (float32, tf32 matmuls), which are not what these float64 checks are about
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("G", [1, 4])
def test_groups_and_no_initial_state(G, device):
    t = _inputs(G=G, requires_grad=False, device=device)
    y = ssd(t["x"], t["dt"], t["A"], t["B"], t["C"], chunk_size=8, backend="chunked")
    y_r = ref.ssd(t["x"], t["dt"], t["A"], t["B"], t["C"])
    assert rel_err(y, y_r) < 1e-12


@needs_scan
@pytest.mark.parametrize("G", [1, 2])
@pytest.mark.parametrize("shape", [dict(L=29, H=4, P=3, N=5), dict(L=70, H=2, P=9, N=16), dict(L=1, H=4, P=8, N=3)])
def test_scan_equals_recurrence(G, shape):
    """Output, final state and every gradient (x, Δ, A, B, C, initial state) in float64;
    P = 9 leaves a partly filled vector of channels, N = 16 is Mamba-2's preset size."""
    t = _inputs(G=G, **shape)
    y, S, g = _run(ssd_scan, t, 64)
    y_r, S_r, g_r = _run(ref.ssd, t, 64)
    assert rel_err(y, y_r) < 1e-12 and rel_err(S, S_r) < 1e-12
    for name, a, b in zip(t, g, g_r):
        assert rel_err(a, b) < 1e-11, f"d{name}"


@needs_scan
def test_scan_without_initial_state_and_float32():
    """float32 (8 channels per vector, the kernels' float paths), forward and gradients
    against the float64 reference."""
    t = _inputs(L=200, N=16, dtype=torch.float32)
    args = [t[k] for k in ("x", "dt", "A", "B", "C")]
    y32 = ssd(*args, backend="scan")
    assert y32.dtype == torch.float32
    args64 = [a.detach().double().requires_grad_() for a in args]
    y64 = ref.ssd(*args64)
    assert rel_err(y32.double(), y64) < 1e-5
    gy = torch.randn(y64.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    g32 = torch.autograd.grad((y32 * gy.float()).sum(), args)
    g64 = torch.autograd.grad((y64 * gy).sum(), args64)
    for name, a, b in zip(("x", "dt", "A", "B", "C"), g32, g64):
        assert rel_err(a.double(), b) < 1e-4, f"d{name}"


def test_auto_backend_on_cpu(monkeypatch):
    """auto: the scan up to SCAN_MAX_STATE (where it is the faster one), the chunked
    algorithm above it or without the compiled extension."""
    monkeypatch.delenv("SEQZOO_BACKEND", raising=False)
    want = "scan" if _ext.has_kernel("selective_scan", "cpu") else "chunked"
    assert _dispatch.select("ssd", "auto", "cpu") == want
    calls = []
    monkeypatch.setattr(ssd_mod, "ssd_scan", lambda *a: calls.append("scan") or ref.ssd(*a))
    monkeypatch.setattr(ssd_mod, "ssd_chunked", lambda *a: calls.append("chunked") or ref.ssd(*a))
    for N in (ssd_mod.SCAN_MAX_STATE, ssd_mod.SCAN_MAX_STATE + 1):
        t = _inputs(N=N, requires_grad=False)
        ssd(*(t[k] for k in ("x", "dt", "A", "B", "C")))
    assert calls == ([want, "chunked"])


@pytest.mark.parametrize("device", DEVICES)
def test_length_one_and_float32(device):
    t = _inputs(L=1, requires_grad=False, device=device)
    y, S = ssd(*(t[k] for k in ("x", "dt", "A", "B", "C")), 64, t["initial_state"], True, backend="chunked")
    y_r, S_r = ref.ssd(*(t[k] for k in ("x", "dt", "A", "B", "C")), 64, t["initial_state"], True)
    assert rel_err(y, y_r) < 1e-13 and rel_err(S, S_r) < 1e-13
    t32 = _inputs(L=200, dtype=torch.float32, requires_grad=False, device=device)
    y32 = ssd(*(t32[k] for k in ("x", "dt", "A", "B", "C")), 64, backend="chunked")
    assert y32.dtype == torch.float32
    assert rel_err(y32.double(), ref.ssd(*(t32[k].double() for k in ("x", "dt", "A", "B", "C")))) < 1e-5


def test_reference_against_scalar_loop():
    """The spec against the recurrence written per (b, h, p, n) from the paper's eq. (1)-(2)."""
    t = _inputs(B=1, L=4, H=2, P=2, G=1, N=2, requires_grad=False)
    y, S = ref.ssd(t["x"], t["dt"], t["A"], t["B"], t["C"], initial_state=t["initial_state"], return_final_state=True)
    x, dt, A, Bm, Cm, S0 = t.values()
    state = S0.clone()
    for s in range(4):
        for h in range(2):
            a = torch.exp(dt[0, s, h] * A[h])
            for p in range(2):
                for n in range(2):
                    state[0, h, p, n] = a * state[0, h, p, n] + dt[0, s, h] * x[0, s, h, p] * Bm[0, s, 0, n]
                out = sum(state[0, h, p, n] * Cm[0, s, 0, n] for n in range(2))
                assert abs(out - y[0, s, h, p]) < 1e-13
    assert rel_err(S, state) < 1e-14


def test_bad_inputs():
    t = _inputs(requires_grad=False)
    args = [t[k] for k in ("x", "dt", "A", "B", "C")]
    with pytest.raises(ValueError, match=r"A must be \(H,\)"):
        ssd(*args[:2], torch.ones(3, dtype=torch.float64), *args[3:])
    with pytest.raises(ValueError, match="G = 3 must divide"):
        g3 = torch.randn(2, 29, 3, 5, dtype=torch.float64)
        ssd(*args[:3], g3, g3)
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        ssd(*args, chunk_size=0)
    with pytest.raises(ValueError, match=r"dt must be \(B, L, H\)"):
        ssd(args[0], args[1][:, :3], *args[2:])
    with pytest.raises(ValueError, match="unknown backend 'cuda_fast'"):
        ssd(*args, backend="cuda_fast")


def test_steep_decays_have_finite_gradients():
    """Within a chunk, e^{s_i - s_j} for j > i would overflow; it is masked before the exp,
    so neither the output nor any gradient sees an inf (a where() after the exp would turn
    the masked infs into NaN gradients)."""
    t = _inputs(L=40)
    with torch.no_grad():
        t["dt"].mul_(40.0)  # Δ A down to about -1e3 per step
    y, S, g = _run(ssd_chunked, t, 16)
    y_r, S_r, g_r = _run(ref.ssd, t, 16)
    assert rel_err(y, y_r) < 1e-12 and rel_err(S, S_r) < 1e-12
    for name, a, b in zip(t, g, g_r):
        assert torch.isfinite(a).all() and rel_err(a, b) < 1e-10, f"d{name}"


def test_bf16_autocast_is_close_to_float32():
    """Under bf16 autocast the matmuls run in bf16 (fp32 accumulation); the decays and the
    recurrence across chunks stay fp32, and so does the final state."""
    t = _inputs(L=96, dtype=torch.float32, requires_grad=False)
    args = [t[k] for k in ("x", "dt", "A", "B", "C")]
    y32, S32 = ssd_chunked(*args, 32, t["initial_state"], True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y16, S16 = ssd_chunked(*args, 32, t["initial_state"], True)
    assert S16.dtype == torch.float32 and torch.isfinite(y16).all()
    assert rel_err(y16.float(), y32) < 3e-2 and rel_err(S16, S32) < 3e-2
