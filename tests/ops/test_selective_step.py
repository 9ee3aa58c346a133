"""The fused Mamba step (seqzoo/ops/selective_step/) against its reference, the Mamba layer
it serves, and the paper's recurrence written out element by element."""

from __future__ import annotations

import importlib
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

import seqzoo
from seqzoo import _ext
from seqzoo.ops import selective_step
from seqzoo.ops.selective_step import ref
from tests.helpers import rel_err

step_mod = importlib.import_module("seqzoo.ops.selective_step")
needs_ext = pytest.mark.skipif(not _ext.has_kernel("selective_step", "cpu"), reason="seqzoo._C not built")


def _args(Bsz=3, Dm=8, E=12, N=5, W=4, R=3, *, bias=True, conv_bias=True, dtype=torch.float64, seed=0):
    """Arguments in the ranges a Mamba layer produces (A < 0, Δ around softplus(0.1..2))."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    args = (r(Bsz, Dm), r(Bsz, E, W - 1), r(Bsz, E, N), r(2 * E, Dm) * Dm**-0.5, r(2 * E) if bias else None,
            r(E, W) * 0.5, r(E) if conv_bias else None, r(R + 2 * N, E) * E**-0.5, r(E, R) * R**-0.5,
            r(E) * 0.5 - 1.0, -torch.rand(E, N, generator=g, dtype=torch.float64) * 2 - 0.1, r(E),
            r(Dm, E) * E**-0.5, r(Dm) if bias else None)
    return tuple(None if a is None else a.to(dtype) for a in args)


@needs_ext
@pytest.mark.parametrize("W, N, Bsz, bias, conv_bias", list(itertools.product([1, 2, 4], [5, 16], [1, 3, 6], [True, False],
                                                                          [True, False])))
def test_compiled_matches_reference_float64(W, N, Bsz, bias, conv_bias):
    args = _args(Bsz=Bsz, W=W, N=N, bias=bias, conv_bias=conv_bias)
    got = selective_step(*args, backend="cpp")
    want = ref.selective_step(*args)
    for name, g, w in zip(("out", "conv_state", "ssm_state"), got, want):
        assert g.shape == w.shape and g.dtype == w.dtype, name
        assert rel_err(g, w) < 1e-12, f"{name}: {rel_err(g, w):.1e}"


@needs_ext
def test_compiled_matches_reference_float32_at_mamba_sizes():
    args = _args(Bsz=2, Dm=64, E=128, N=16, W=4, R=4, dtype=torch.float32)
    for g, w in zip(selective_step(*args, backend="cpp"), ref.selective_step(*args)):
        assert rel_err(g, w) < 2e-5


@needs_ext
def test_non_contiguous_inputs():
    """Transposed views (weights as another layer may store them, states sliced from a
    bigger buffer) give the contiguous inputs' result."""
    args = _args()

    def noncontig(t):
        if t is None or t.dim() < 2:
            return t
        v = t.transpose(-1, -2).contiguous().transpose(-1, -2)
        assert not v.is_contiguous() or min(t.shape[-2:]) <= 1
        return v

    got = selective_step(*(noncontig(a) for a in args), backend="cpp")
    for g, w in zip(got, selective_step(*args, backend="cpp")):
        assert rel_err(g, w) < 1e-13  # BLAS may sum a transposed matrix's products in another order


def test_reference_is_the_papers_recurrence():
    """The spec against a scalar loop written from Mamba's Fig. 3 and Algorithm 2 (L = 1)."""
    args = _args(Bsz=2, Dm=3, E=4, N=3, W=3, R=2)
    x, cs, h0, w_in, b_in, cw, cb, w_x, w_dt, dt_b, A, Dv, w_out, b_out = args
    out, cs_new, h_new = ref.selective_step(*args)
    E, N, R = 4, 3, 2
    softplus = lambda v: math.log1p(math.exp(v))  # noqa: E731
    silu = lambda v: v / (1 + math.exp(-v))  # noqa: E731
    for b in range(2):
        xz = [float(w_in[i] @ x[b] + b_in[i]) for i in range(2 * E)]
        u = [silu(sum(float(cw[e, k]) * float(cs[b, e, k]) for k in range(2)) + float(cw[e, 2]) * xz[e] + float(cb[e]))
             for e in range(E)]
        dbl = [sum(float(w_x[j, e]) * u[e] for e in range(E)) for j in range(R + 2 * N)]
        y = []
        for e in range(E):
            dt = softplus(sum(float(w_dt[e, r]) * dbl[r] for r in range(R)) + float(dt_b[e]))
            acc = 0.0
            for n in range(N):
                h = math.exp(dt * float(A[e, n])) * float(h0[b, e, n]) + dt * u[e] * dbl[R + n]
                assert abs(h - float(h_new[b, e, n])) < 1e-12
                acc += h * dbl[R + N + n]
            y.append((acc + float(Dv[e]) * u[e]) * silu(xz[E + e]))
            assert [float(v) for v in cs_new[b, e]] == [float(cs[b, e, 1]), xz[e]]
        for d in range(3):
            assert abs(sum(float(w_out[d, e]) * y[e] for e in range(E)) + float(b_out[d]) - float(out[b, d])) < 1e-12


def test_inputs_are_not_modified():
    args = _args()
    before = [None if a is None else a.clone() for a in args]
    for backend in ("ref", "cpp") if _ext.has_kernel("selective_step", "cpu") else ("ref",):
        selective_step(*args, backend=backend)
        assert all(a is None or torch.equal(a, b) for a, b in zip(args, before))


@needs_ext
def test_gradients_run_the_reference():
    """The kernel has no backward: with a gradient needed, ``auto`` runs the reference (whose
    autograd is the step's exact derivative), ``cpp`` says why it cannot."""
    args = tuple(None if a is None else a.clone().requires_grad_() for a in _args())
    out, cs, h = selective_step(*args)
    loss = out.square().sum() + h.square().sum()
    grads = torch.autograd.grad(loss, [a for a in args if a is not None])
    args_r = tuple(None if a is None else a.detach().clone().requires_grad_() for a in args)
    out_r, _, h_r = ref.selective_step(*args_r)
    grads_r = torch.autograd.grad(out_r.square().sum() + h_r.square().sum(), [a for a in args_r if a is not None])
    for g, gr in zip(grads, grads_r):
        assert torch.equal(g, gr)
    with pytest.raises(ValueError, match="without gradients"):
        selective_step(*args, backend="cpp")
    with torch.no_grad():  # no gradient recorded: the kernel runs
        selective_step(*args, backend="cpp")


@needs_ext
def test_other_dtypes_run_the_reference():
    args32 = _args(dtype=torch.float32)
    mixed = (args32[0], args32[1], args32[2].double(), *args32[3:])  # an fp64 state with fp32 weights
    assert not step_mod.fused_ok(mixed)
    with pytest.raises(ValueError, match="float32 or float64"):
        selective_step(*mixed, backend="cpp")
    got = selective_step(*mixed)
    for g, w in zip(got, ref.selective_step(*mixed)):
        assert torch.equal(g, w)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not step_mod.fused_ok(args32)
        out, _, h = selective_step(*args32)
    assert out.dtype == torch.bfloat16 and h.dtype == torch.float32


@pytest.mark.parametrize("index, bad, match", [
    (1, torch.zeros(3, 12, 2, dtype=torch.float64), r"conv_state must be \(3, 12, 3\)"),
    (2, torch.zeros(3, 12, 4, dtype=torch.float64), r"ssm_state must be \(3, 12, 5\)"),
    (3, torch.zeros(12, 8, dtype=torch.float64), r"in_proj_weight must be \(24, 8\)"),
    (7, torch.zeros(12, 12, dtype=torch.float64), r"x_proj_weight must be \(13, 12\)"),
    (12, torch.zeros(8, 5, dtype=torch.float64), r"out_proj_weight must be \('Dout', 12\)"),
    (0, torch.zeros(3, 8, dtype=torch.int64), "dtype torch.int64"),
])
def test_bad_inputs_say_what_is_wrong(index, bad, match):
    args = list(_args())
    args[index] = bad
    with pytest.raises((ValueError, TypeError), match=match):
        selective_step(*args)


def test_unknown_backend_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid: auto, ref, cpp, cuda"):
        selective_step(*_args(), backend="fast")


@needs_ext
def test_opcheck():
    """Schema, fake kernel (shapes, dtypes, strides; also for transposed inputs) and the
    dispatcher registration agree with the CPU kernel."""
    args = _args()
    transposed = tuple(a if a is None or a.dim() < 2 else a.transpose(-1, -2).contiguous().transpose(-1, -2)
                       for a in args)
    for a in (args, transposed, _args(W=1, bias=False, conv_bias=False, dtype=torch.float32)):
        torch.library.opcheck(torch.ops.seqzoo.selective_step.default, a)


@needs_ext
def test_mamba_step_runs_the_fused_kernel(monkeypatch):
    """An fp32 Mamba layer's step goes through the compiled kernel (no gradient), and a step
    loop still equals the parallel form; with autograd on, the reference runs."""
    mamba_mod = importlib.import_module("seqzoo.layers.mamba")
    calls = []
    real = mamba_mod.selective_step_run

    def counting(args, backend="auto"):
        calls.append(step_mod.fused_ok(args))
        return real(args, backend)

    monkeypatch.setattr(mamba_mod, "selective_step_run", counting)
    torch.manual_seed(0)
    layer = seqzoo.build("mamba", d_model=16, d_state=4).eval()
    x = torch.randn(2, 7, 16)
    with torch.no_grad():
        full, final = layer(x, return_state=True)
        state, ys = None, []
        for t in range(7):
            y, state = layer.step(x[:, t], state)
            ys.append(y)
    assert calls and all(calls)
    assert rel_err(torch.stack(ys, 1), full) < 1e-5
    assert rel_err(state.ssm_state, final.ssm_state) < 1e-5
    calls.clear()
    y, _ = layer.step(x[:, 0], layer.init_state(2))
    assert calls == [False] and y.requires_grad  # autograd on: the reference, differentiable


@needs_ext
def test_fused_step_under_torch_compile():
    """The op inside a compiled Mamba step: no graph break, the eager result."""
    torch.manual_seed(0)
    layer = seqzoo.build("mamba", d_model=16, d_state=4).eval()
    x = torch.randn(2, 16)
    state = layer.init_state(2)
    with torch.no_grad():
        want, _ = layer.step(x, state)
        torch._dynamo.reset()
        got, _ = torch.compile(layer.step, fullgraph=True, backend="aot_eager")(x, state)
    assert rel_err(got, want) < 1e-6


def test_reference_matches_functional_linear_layout():
    """The op's weight layout is nn.Linear's ((out, in)): the reference's projections are
    exactly F.linear of the same tensors."""
    args = _args(Bsz=1)
    x, w_in, b_in = args[0], args[3], args[4]
    xz = F.linear(x, w_in, b_in)
    out, cs, _ = ref.selective_step(*args)
    assert torch.equal(cs[..., -1], xz[:, :12])


def test_no_kernel_for_the_device_runs_the_reference_quietly(monkeypatch, recwarn):
    """Where the extension has no kernel (a GPU, or no build), ``auto`` runs the reference
    without the fallback warning: for the decode step that is the intended path."""
    monkeypatch.setattr(_ext, "has_kernel", lambda op, device_type: False)
    args = _args()
    got = selective_step(*args)
    for g, w in zip(got, ref.selective_step(*args)):
        assert torch.equal(g, w)
    assert not [w for w in recwarn if "selective_step" in str(w.message)]
