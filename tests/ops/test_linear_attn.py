"""The chunked and recurrent linear-attention forms against the naive quadratic reference
(seqzoo/ops/linear_attn/ref.py): forward, backward and final state in float64, for chunk
sizes that do and do not divide L, with and without decay (scalar, per head, per step),
normalisation and an initial state. The op is pure PyTorch (not a torch.library custom
op), so there is no opcheck to run; gradcheck covers its autograd. The comparisons run on
every device in ``tests.helpers.DEVICES`` (on CUDA with the ``cuda`` marker, skipped
without a GPU); gradcheck and the fuzz test stay on the CPU."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seqzoo.ops.linear_attn import chunk, linear_attn, recurrent, ref
from tests.helpers import DEVICES, rel_err

B, H, L, K, V = 2, 3, 29, 5, 4


def _inputs(decay_kind, normalize, h0, seed=0, L=L, device="cpu"):
    """Generated on the CPU (the same values on every device), then moved to ``device``."""
    g = torch.Generator().manual_seed(seed)
    q = torch.rand(B, H, L, K, generator=g, dtype=torch.float64)  # non-negative features
    k = torch.rand(B, H, L, K, generator=g, dtype=torch.float64)
    v = torch.randn(B, H, L, V, generator=g, dtype=torch.float64)
    decay = {
        "none": None,
        "scalar": 0.9,
        "head": 0.5 + 0.5 * torch.rand(H, generator=g, dtype=torch.float64),
        "step": 0.5 + 0.5 * torch.rand(B, H, L, generator=g, dtype=torch.float64),
    }[decay_kind]
    s0 = torch.rand(B, H, K, V + int(normalize), generator=g, dtype=torch.float64) if h0 else None
    return tuple(t.to(device) if isinstance(t, torch.Tensor) else t for t in (q, k, v, decay, s0))


def _run(fn, q, k, v, decay, s0, normalize, chunk_size):
    leaves = [t.detach().clone().requires_grad_() if isinstance(t, torch.Tensor) else t for t in (q, k, v, decay, s0)]
    q, k, v, decay, s0 = leaves
    o, final = fn(q, k, v, decay=decay, normalize=normalize, initial_state=s0, chunk_size=chunk_size)
    g = torch.Generator().manual_seed(7)
    go = torch.randn(o.shape, generator=g, dtype=o.dtype).to(o.device)
    gf = torch.randn(final.shape, generator=g, dtype=o.dtype).to(o.device)
    loss = (o * go).sum() + (final * gf).sum()
    wrt = [t for t in leaves if isinstance(t, torch.Tensor)]
    return o, final, torch.autograd.grad(loss, wrt)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("decay_kind", ["none", "scalar", "head", "step"])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("h0", [True, False])
@pytest.mark.parametrize("chunk_size", [1, 4, 7, 29, 64])  # 7 does not divide 29; 64 > L
def test_chunk_and_recurrent_equal_reference(decay_kind, normalize, h0, chunk_size, device):
    args = _inputs(decay_kind, normalize, h0, device=device)
    o_ref, f_ref, g_ref = _run(ref.linear_attn, *args, normalize, chunk_size)
    forms = [chunk] + ([recurrent] if chunk_size == 4 else [])  # the loop does not depend on chunk_size
    for form in forms:
        o, f, grads = _run(form, *args, normalize, chunk_size)
        assert o.shape == (B, H, L, V) and f.shape == f_ref.shape
        assert rel_err(o, o_ref) < 1e-12, form.__name__
        assert rel_err(f, f_ref) < 1e-12, form.__name__
        for got, want in zip(grads, g_ref):
            assert rel_err(got, want) < 1e-11, form.__name__


def test_reference_matches_explicit_loop():
    """The reference itself against the defining sums, written out per (b, h, t)."""
    q, k, v, decay, s0 = _inputs("head", True, True, L=9)
    o, f = ref.linear_attn(q, k, v, decay=decay, normalize=True, initial_state=s0, eps=0.0)
    for b in range(B):
        for h in range(H):
            S, z = s0[b, h, :, :V].clone(), s0[b, h, :, V].clone()
            for t in range(9):
                S = decay[h] * S + torch.outer(k[b, h, t], v[b, h, t])
                z = decay[h] * z + k[b, h, t]
                want = q[b, h, t] @ S / (q[b, h, t] @ z)
                assert rel_err(o[b, h, t], want) < 1e-12
            assert rel_err(f[b, h, :, :V], S) < 1e-12 and rel_err(f[b, h, :, V], z) < 1e-12


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("decay_kind", ["none", "step"])
def test_split_with_state_equals_full(decay_kind, device):
    """Running the chunked form on two pieces, carrying the state (with z), equals one run."""
    q, k, v, decay, _ = _inputs(decay_kind, True, False, device=device)
    o, f = chunk(q, k, v, decay=decay, chunk_size=4)
    cut = 11
    d1 = d2 = decay
    if decay is not None:
        d1, d2 = decay[:, :, :cut], decay[:, :, cut:]
    o1, s1 = chunk(q[:, :, :cut], k[:, :, :cut], v[:, :, :cut], decay=d1, chunk_size=4)
    o2, s2 = chunk(q[:, :, cut:], k[:, :, cut:], v[:, :, cut:], decay=d2, initial_state=s1, chunk_size=4)
    assert rel_err(torch.cat([o1, o2], dim=2), o) < 1e-12
    assert rel_err(s2, f) < 1e-12


@pytest.mark.parametrize("device", DEVICES)
def test_output_final_state_false_and_empty(device):
    q, k, v, _, s0 = _inputs("none", True, True, device=device)
    o, f = chunk(q, k, v, initial_state=s0, output_final_state=False)
    assert f is None and rel_err(o, ref.linear_attn(q, k, v, initial_state=s0)[0]) < 1e-12
    for form in (chunk, recurrent, ref.linear_attn):
        o, f = form(q[:, :, :0], k[:, :, :0], v[:, :, :0], initial_state=s0)
        assert o.shape == (B, H, 0, V) and torch.equal(f, s0)


def test_mode_dispatch():
    q, k, v, decay, s0 = _inputs("scalar", False, True)
    want = ref.linear_attn(q, k, v, decay=decay, normalize=False, initial_state=s0)[0]
    for mode in ("chunk", "recurrent", "ref"):
        got = linear_attn(q, k, v, mode=mode, decay=decay, normalize=False, initial_state=s0, chunk_size=6)[0]
        assert rel_err(got, want) < 1e-12
    with pytest.raises(ValueError, match="unknown mode 'fused'.*chunk, recurrent, ref"):
        linear_attn(q, k, v, mode="fused")


def test_gradcheck():
    g = torch.Generator().manual_seed(3)
    q, k = (torch.rand(1, 2, 6, 3, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    v = torch.randn(1, 2, 6, 2, generator=g, dtype=torch.float64, requires_grad=True)
    decay = (0.5 + 0.5 * torch.rand(1, 2, 6, generator=g, dtype=torch.float64)).requires_grad_()
    s0 = torch.rand(1, 2, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)

    def fn(q, k, v, decay, s0):
        o, f = chunk(q, k, v, decay=decay, initial_state=s0, chunk_size=4)
        return o, f

    assert torch.autograd.gradcheck(fn, (q, k, v, decay, s0))


@settings(max_examples=25, deadline=None)
@given(
    L=st.integers(1, 40),
    chunk_size=st.integers(1, 16),
    normalize=st.booleans(),
    decay_kind=st.sampled_from(["none", "scalar", "head", "step"]),
)
def test_fuzz_chunk_vs_reference(L, chunk_size, normalize, decay_kind):
    q, k, v, decay, s0 = _inputs(decay_kind, normalize, True, seed=L, L=L)
    o, f = chunk(q, k, v, decay=decay, normalize=normalize, initial_state=s0, chunk_size=chunk_size)
    o_ref, f_ref = ref.linear_attn(q, k, v, decay=decay, normalize=normalize, initial_state=s0)
    assert rel_err(o, o_ref) < 1e-11 and rel_err(f, f_ref) < 1e-11


@pytest.mark.parametrize("device", DEVICES)
def test_long_sequence_with_strong_decay_is_finite(device):
    """Cumulative log-decays reach -1e3 over the sequence; the chunked form never exponentiates
    a positive number, so nothing overflows, and it still equals the reference."""
    g = torch.Generator().manual_seed(0)
    q, k = (torch.rand(1, 1, 2000, 4, generator=g, dtype=torch.float64).to(device) for _ in range(2))
    v = torch.randn(1, 1, 2000, 3, generator=g, dtype=torch.float64).to(device)
    o, f = chunk(q, k, v, decay=0.6, chunk_size=64)
    assert torch.isfinite(o).all() and torch.isfinite(f).all()
    o32, _ = chunk(q.float(), k.float(), v.float(), decay=0.6, chunk_size=64)
    assert rel_err(o32.double(), o) < 1e-4
    o_ref, f_ref = ref.linear_attn(q, k, v, decay=0.6)
    assert rel_err(o, o_ref) < 1e-12 and rel_err(f, f_ref) < 1e-12


@pytest.mark.parametrize("form", [chunk, recurrent, ref.linear_attn], ids=["chunk", "recurrent", "ref"])
def test_bad_inputs(form):
    q, k, v, _, _ = _inputs("none", True, False)
    with pytest.raises(ValueError, match=r"q must be \(B, H, L, K\)"):
        form(q[0], k, v)
    with pytest.raises(ValueError, match="q and k must have the same shape"):
        form(q, k[..., :2], v)
    with pytest.raises(ValueError, match="v must be"):
        form(q, k, v[:, :, :3])
    with pytest.raises(TypeError, match="share a dtype"):
        form(q, k, v.float())
    with pytest.raises(ValueError, match=r"decay must lie in \(0, 1\]"):
        form(q, k, v, decay=1.5)
    with pytest.raises(ValueError, match=r"decay values must lie in \(0, 1\]"):
        form(q, k, v, decay=torch.zeros(H, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"decay must be a scalar, \(H,\)"):
        form(q, k, v, decay=torch.full((H + 1,), 0.5, dtype=torch.float64))
    with pytest.raises(ValueError, match="V \\+ 1.*normaliser z"):
        form(q, k, v, initial_state=torch.zeros(B, H, K, V, dtype=torch.float64))
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        form(q, k, v, chunk_size=0)
