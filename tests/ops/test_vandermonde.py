"""The compiled Vandermonde ops against their reference (seqzoo/ops/vandermonde/ref.py).

The comparisons run on every device in ``tests.helpers.DEVICES``: on CUDA (marker ``cuda``)
they test the extension's CUDA kernel, and skip without a GPU or without that kernel;
the fuzz, memory and dispatch tests stay on the CPU."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seqzoo import _ext
from seqzoo.ops import _dispatch, vandermonde, vandermonde_transpose
from seqzoo.ops.vandermonde import ref
from tests.helpers import DEVICES, compiled_backend, rel_err

needs_ext = pytest.mark.skipif(not _ext.has_kernel("vandermonde", "cpu"), reason="seqzoo._C not built")


def _inputs(M, N, L, seed=0, requires_grad=True, device="cpu"):
    """Generated on the CPU (the same values on every device), then moved to ``device``."""
    g = torch.Generator().manual_seed(seed)
    c = torch.complex(torch.randn(M, N, generator=g, dtype=torch.float64), torch.randn(M, N, generator=g, dtype=torch.float64))
    # a discretised S4D spectrum: Δ·A with Re < 0 and imaginary parts up to a few radians
    log_z = torch.complex(-0.05 * torch.rand(M, N, generator=g, dtype=torch.float64), 3 * torch.randn(M, N, generator=g, dtype=torch.float64))
    u = torch.randn(M, L, generator=g, dtype=torch.float64)
    return [t.to(device).requires_grad_(requires_grad) for t in (c, log_z, u)]


def test_reference_against_loops():
    c, lz, u = _inputs(2, 3, 5, requires_grad=False)
    z = torch.exp(lz)
    K = torch.zeros(2, 5, dtype=torch.float64)
    S = torch.zeros(2, 3, dtype=torch.complex128)
    for m in range(2):
        for n in range(3):
            for l in range(5):
                K[m, l] += 2 * (c[m, n] * z[m, n] ** l).real
                S[m, n] += u[m, l] * z[m, n] ** l
    assert rel_err(ref.vandermonde(c, lz, 5), K) < 1e-13
    assert rel_err(ref.vandermonde_transpose(u, lz), S) < 1e-13


def _compiled(device):
    """The compiled backend of both ops on ``device`` (skips the test without one)."""
    compiled_backend("vandermonde_transpose", device)
    return compiled_backend("vandermonde", device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(3, 17, 29), (1, 1, 1), (2, 130, 300), (4, 64, 1000)])
def test_matches_reference_float64(shape, device):
    backend = _compiled(device)
    M, N, L = shape
    c, lz, u = _inputs(M, N, L, device=device)
    out = vandermonde(c, lz, L, backend=backend)
    out_ref = ref.vandermonde(c, lz, L)
    assert out.dtype == torch.float64 and rel_err(out, out_ref) < 1e-12
    g = torch.randn(out.shape, dtype=out.dtype).to(device)  # drawn on the CPU: the same on every device
    got = torch.autograd.grad((out * g).sum(), [c, lz])
    want = torch.autograd.grad((out_ref * g).sum(), [c, lz])
    for a, b in zip(got, want):
        assert rel_err(a, b) < 1e-11

    S = vandermonde_transpose(u, lz, backend=backend)
    S_ref = ref.vandermonde_transpose(u, lz)
    assert S.dtype == torch.complex128 and rel_err(S, S_ref) < 1e-12
    gS = torch.randn(S.shape, dtype=S.dtype).to(device)
    got = torch.autograd.grad((S * gS.conj()).real.sum(), [u, lz])
    want = torch.autograd.grad((S_ref * gS.conj()).real.sum(), [u, lz])
    for a, b in zip(got, want):
        assert rel_err(a, b) < 1e-11


@pytest.mark.parametrize("device", DEVICES)
def test_float32_is_accurate_over_long_sequences(device):
    """Internally double: a complex64 input at L = 8192 stays within float32 rounding of
    the float64 reference (a float32 running product would drift by ~L·eps)."""
    backend = _compiled(device)
    c, lz, u = _inputs(2, 32, 8192, requires_grad=False, device=device)
    out = vandermonde(c.to(torch.complex64), lz.to(torch.complex64), 8192, backend=backend)
    want = ref.vandermonde(c.to(torch.complex64).to(torch.complex128), lz.to(torch.complex64).to(torch.complex128), 8192)
    assert out.dtype == torch.float32 and rel_err(out.double(), want) < 1e-5


@pytest.mark.parametrize("device", DEVICES)
def test_strong_decay_flushes_to_zero_without_nan(device):
    backend = _compiled(device)
    c, lz, u = _inputs(2, 8, 5000, requires_grad=False, device=device)
    lz = torch.complex(torch.full_like(lz.real, -3.0), lz.imag)  # |z| = e^-3: underflows quickly
    assert rel_err(vandermonde(c, lz, 5000, backend=backend), ref.vandermonde(c, lz, 5000)) < 1e-13
    S = vandermonde_transpose(u, lz, backend=backend)
    assert torch.isfinite(torch.view_as_real(S)).all() and rel_err(S, ref.vandermonde_transpose(u, lz)) < 1e-13


@pytest.mark.parametrize("device", DEVICES)
def test_broadcast_batch(device):
    backend = _compiled(device)
    c, lz, u = _inputs(3, 10, 40, requires_grad=False, device=device)
    c4 = torch.randn(2, 3, 10, dtype=torch.complex128).to(device)
    out = vandermonde(c4, lz, 40, backend=backend)
    assert out.shape == (2, 3, 40) and rel_err(out, ref.vandermonde(c4, lz, 40)) < 1e-12
    u4 = torch.randn(5, 3, 40, dtype=torch.float64).to(device)
    S = vandermonde_transpose(u4, lz, backend=backend)
    assert S.shape == (5, 3, 10) and rel_err(S, ref.vandermonde_transpose(u4, lz)) < 1e-12


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck_and_gradgradcheck(device):
    backend = _compiled(device)
    c, lz, u = _inputs(2, 4, 7, device=device)
    f = lambda c_, z_: vandermonde(c_, z_, 7, backend=backend)  # noqa: E731
    t = lambda u_, z_: vandermonde_transpose(u_, z_, backend=backend)  # noqa: E731
    assert torch.autograd.gradcheck(f, (c, lz))
    assert torch.autograd.gradcheck(t, (u, lz))
    # second order (each backward is the other op): small, gradgradcheck is quadratic in size
    c, lz, u = c[:1, :2].detach().requires_grad_(), lz[:1, :2].detach().requires_grad_(), u[:1, :3].detach().requires_grad_()
    f3 = lambda c_, z_: vandermonde(c_, z_, 3, backend=backend)  # noqa: E731
    assert torch.autograd.gradgradcheck(f3, (c, lz))
    assert torch.autograd.gradgradcheck(t, (u, lz))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_opcheck(dtype, device):
    """The fake kernels, schema and autograd registration agree with the device's kernel."""
    _compiled(device)
    c, lz, u = _inputs(3, 6, 9, device=device)
    c, lz = c.detach().to(dtype).requires_grad_(), lz.detach().to(dtype).requires_grad_()
    u = u.detach().to(dtype.to_real()).requires_grad_()
    torch.library.opcheck(torch.ops.seqzoo.vandermonde.default, (c, lz, 9))
    torch.library.opcheck(torch.ops.seqzoo.vandermonde_transpose.default, (u, lz))


@needs_ext
@settings(max_examples=20, deadline=None)
@given(M=st.integers(1, 4), N=st.integers(1, 150), L=st.integers(0, 400))
def test_shape_fuzz(M, N, L):
    c, lz, u = _inputs(M, N, max(L, 1), seed=M * 100000 + N * 1000 + L, requires_grad=False)
    u = u[:, :L]
    assert rel_err(vandermonde(c, lz, L, backend="cpp"), ref.vandermonde(c, lz, L)) < 1e-12
    assert rel_err(vandermonde_transpose(u, lz, backend="cpp"), ref.vandermonde_transpose(u, lz)) < 1e-12


@needs_ext
def test_memory_is_linear_not_n_times_l():
    """The compiled op never forms the (N, L) matrix of powers per row: its peak extra
    memory at N = 256, L = 16384 (M = 8) stays far below the 8·256·16384·16 B ≈ 537 MB the
    reference would need."""
    from bench.common import peak_memory

    c = torch.randn(8, 256, dtype=torch.complex128)
    lz = torch.complex(-0.01 * torch.rand(8, 256, dtype=torch.float64), torch.randn(8, 256, dtype=torch.float64))
    peak = peak_memory(lambda: vandermonde(c, lz, 16384, backend="cpp"))
    if peak < 0:
        pytest.skip("no memory counter on this platform")
    assert peak < 8 * 16384 * 8 * 4  # a few copies of the (M, L) output at most


@needs_ext
def test_auto_picks_compiled_kernel(monkeypatch):
    monkeypatch.delenv("SEQZOO_BACKEND", raising=False)
    assert _dispatch.select("vandermonde", "auto", "cpu") == "cpp"
    assert _dispatch.select("vandermonde_transpose", "auto", "cpu") == "cpp"


def test_bad_inputs():
    c, lz, u = _inputs(2, 5, 4, requires_grad=False)
    with pytest.raises(ValueError, match="same N"):
        vandermonde(c, lz[:, :3], 4)
    with pytest.raises(ValueError, match="non-negative int"):
        vandermonde(c, lz, -1)
    with pytest.raises(TypeError, match="real"):
        vandermonde_transpose(u.to(torch.complex128), lz)
    with pytest.raises(ValueError, match="broadcast"):
        vandermonde_transpose(torch.randn(3, 4, dtype=torch.float64), lz)
    assert math.isfinite(float(vandermonde(c, lz, 3).sum()))
