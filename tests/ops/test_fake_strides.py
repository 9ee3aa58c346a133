"""The compiled ops' fake kernels agree with the real kernels in shape, dtype **and strides**,
also for non-contiguous inputs (transposed views, as the layers pass them: Mamba hands
``causal_conv1d`` a (B, E, L) view of a (B, L, E) tensor). A fake that copied an input's
strides (``empty_like``) made ``torch.compile`` of Mamba fail with "expected size 128==128,
stride 256==1" once the real kernel returned a contiguous tensor.

Each op is checked twice: ``torch.library.opcheck`` (its fake-tensor test cross-checks every
output's metadata, strides included) and an explicit comparison of the fake outputs'
strides with the real outputs', so a failure names the output that differs.
"""

from __future__ import annotations

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from seqzoo import _ext
from seqzoo import ops as _ops  # noqa: F401  (registers the fake kernels)

pytestmark = pytest.mark.skipif(not _ext.available(), reason="seqzoo._C not built")


def _t(*shape, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


def _transposed(*shape, dims=(1, 2), dtype=torch.float64, seed=0):
    """A tensor of ``shape`` that is a transposed view (non-contiguous) of a contiguous one."""
    perm_shape = list(shape)
    perm_shape[dims[0]], perm_shape[dims[1]] = perm_shape[dims[1]], perm_shape[dims[0]]
    t = _t(*perm_shape, dtype=dtype, seed=seed).transpose(*dims)
    assert not t.is_contiguous()
    return t


def _complex_transposed(M, N, seed=0):
    return torch.complex(_t(N, M, seed=seed), _t(N, M, seed=seed + 1)).T  # (M, N), stride (1, M)


def _cases():
    B, D, L, W, N, G = 2, 6, 9, 4, 3, 2
    conv = (_transposed(B, D, L), _transposed(D, W, dims=(0, 1), seed=1), _t(D, seed=2),
            _transposed(B, D, W - 1, seed=3), True)
    x = conv[0]
    ss = (_transposed(B, D, L, seed=4), _transposed(B, D, L, seed=5), -torch.rand(D, N, dtype=torch.float64) - 0.5,
          _t(B, L, G, N, seed=6).permute(0, 2, 3, 1), _t(B, L, G, N, seed=7).permute(0, 2, 3, 1),
          _t(D, seed=8), _transposed(B, D, L, seed=9), _t(D, seed=10), _transposed(B, D, N, seed=11), True, 4)
    a, b = _transposed(B, L, D, seed=12).sigmoid(), _transposed(B, L, D, seed=13)
    v, w = _complex_transposed(5, 4), _complex_transposed(5, 4, seed=2)
    z = torch.complex(_t(7, seed=3), _t(7, seed=4))
    lz = -_complex_transposed(5, 4, seed=5).abs() * 0.1 + 0.3j
    u = _transposed(5, 7, dims=(0, 1), seed=6)
    out = [
        ("causal_conv1d", conv),
        ("causal_conv1d_backward", (_transposed(B, D, L, seed=14), _transposed(B, D, W - 1, seed=15), *conv)),
        ("selective_scan", ss),
        ("diag_scan", (a, b, _t(B, D, seed=16))),
        ("diag_scan_backward", (a, _transposed(B, L, D, seed=17), _transposed(B, L, D, seed=18), _t(B, D, seed=19))),
        ("cauchy", (v, z, w, True)),
        ("cauchy_backward", (_complex_transposed(5, 7, seed=8), v, z, w, True, True)),
        ("vandermonde", (_complex_transposed(5, 4, seed=9), lz, 8)),
        ("vandermonde_transpose", (u, lz)),
    ]
    E, Dm, R = 5, 3, 2  # the fused Mamba step: states and weights as transposed views
    step = (_transposed(B, Dm, dims=(0, 1), seed=22), _transposed(B, E, W - 1, seed=23), _transposed(B, E, N, seed=24),
            _transposed(2 * E, Dm, dims=(0, 1), seed=25), _t(2 * E, seed=26), _transposed(E, W, dims=(0, 1), seed=27),
            _t(E, seed=28), _transposed(R + 2 * N, E, dims=(0, 1), seed=29), _transposed(E, R, dims=(0, 1), seed=30),
            _t(E, seed=31), -_transposed(E, N, dims=(0, 1), seed=32).abs(), _t(E, seed=33),
            _transposed(Dm, E, dims=(0, 1), seed=34), None)
    out.append(("selective_step", step))
    out.append(("matvec", (_transposed(B, Dm, dims=(0, 1), seed=35), _transposed(2 * E, Dm, dims=(0, 1), seed=36),
                           _t(2 * E, seed=37))))
    real_ss = torch.ops.seqzoo.selective_scan(*ss)
    out.append(("selective_scan_backward", (_transposed(B, D, L, seed=20), _transposed(B, D, N, seed=21),
                                            *ss[:8], real_ss[2], True, 4)))
    assert not x.is_contiguous()
    return out


CASES = _cases() if _ext.available() else []


def _outputs(result):
    return result if isinstance(result, tuple) else (result,)


@pytest.mark.parametrize("name, args", CASES, ids=[c[0] for c in CASES])
def test_fake_matches_real_strides(name, args):
    op = getattr(torch.ops.seqzoo, name).default
    real = _outputs(op(*args))
    with FakeTensorMode() as mode:
        fake_args = tuple(mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args)
        fake = _outputs(op(*fake_args))
    assert len(fake) == len(real)
    for i, (f, r) in enumerate(zip(fake, real)):
        assert f.shape == r.shape, f"{name} output {i}: shape {tuple(f.shape)} != real {tuple(r.shape)}"
        assert f.dtype == r.dtype, f"{name} output {i}: dtype {f.dtype} != real {r.dtype}"
        if r.numel() > 1:
            assert f.stride() == r.stride(), f"{name} output {i}: fake strides {f.stride()} != real {r.stride()}"


@pytest.mark.parametrize("name, args", CASES, ids=[c[0] for c in CASES])
def test_opcheck_transposed_inputs(name, args):
    torch.library.opcheck(getattr(torch.ops.seqzoo, name).default, args,
                          test_utils=("test_schema", "test_faketensor"))
