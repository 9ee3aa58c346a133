"""``seqzoo.ops.matvec`` (a decode step's linear layers) against its reference, F.linear;
and the model's step running its linear layers through it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import seqzoo
from seqzoo import _ext
from seqzoo.ops import matvec
from seqzoo.ops.matvec import ref
from tests.helpers import rel_err

needs_ext = pytest.mark.skipif(not _ext.has_kernel("matvec", "cpu"), reason="seqzoo._C not built")


def _args(B=3, O=13, I=10, *, bias=True, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).to(dtype)  # noqa: E731
    return r(B, I), r(O, I), r(O) if bias else None


@needs_ext
@pytest.mark.parametrize("B", [1, 2, 3, 4, 5, 9])  # the kernel's own loop up to 4 rows (pairs and a single), BLAS beyond
@pytest.mark.parametrize("O", [1, 4, 7, 13])  # blocks of 4 output rows and the remainder
@pytest.mark.parametrize("bias", [True, False])
def test_compiled_matches_reference_float64(B, O, bias):
    x, w, b = _args(B, O, bias=bias)
    got = matvec(x, w, b, backend="cpp")
    assert got.shape == (B, O) and got.dtype == torch.float64 and got.is_contiguous()
    assert rel_err(got, ref.matvec(x, w, b)) < 1e-13


@needs_ext
def test_float32_at_decode_sizes():
    x, w, b = _args(1, 1024, 256, dtype=torch.float32)
    assert rel_err(matvec(x, w, b, backend="cpp"), F.linear(x, w, b)) < 1e-5


@needs_ext
def test_non_contiguous_inputs():
    x, w, b = _args(2, 9, 6)
    xt = x.T.contiguous().T  # (B, I) view with strides (1, B)
    wt = w.T.contiguous().T
    assert not xt.is_contiguous() and not wt.is_contiguous()
    assert rel_err(matvec(xt, wt, b, backend="cpp"), F.linear(x, w, b)) < 1e-13


@needs_ext
def test_gradients_and_autocast_run_f_linear():
    x, w, b = (t.clone().requires_grad_() for t in _args())
    y = matvec(x, w, b)
    gx, gw, gb = torch.autograd.grad(y.square().sum(), (x, w, b))
    yr = F.linear(x, w, b)
    rx, rw, rb = torch.autograd.grad(yr.square().sum(), (x, w, b))
    assert torch.equal(y, yr) and torch.equal(gx, rx) and torch.equal(gw, rw) and torch.equal(gb, rb)
    with pytest.raises(ValueError, match="without gradients"):
        matvec(x, w, b, backend="cpp")
    x32, w32, b32 = _args(dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert matvec(x32, w32, b32).dtype == torch.bfloat16  # as F.linear under autocast
    with pytest.raises(ValueError, match="float32 or float64"):
        matvec(x32, w32.double(), None, backend="cpp")


@pytest.mark.parametrize("args, match", [
    ((torch.zeros(2, 3, 4), torch.zeros(5, 4), None), r"x must be \(B, I\).*for a sequence"),
    ((torch.zeros(2, 3), torch.zeros(5, 4), None), r"same I, got x \(2, 3\) and weight \(5, 4\)"),
    ((torch.zeros(2, 4), torch.zeros(5, 4), torch.zeros(4)), r"bias must be \(O,\) = \(5,\)"),
    ((torch.zeros(2, 4, dtype=torch.int64), torch.zeros(5, 4), None), "dtype torch.int64"),
])
def test_bad_inputs_say_what_is_wrong(args, match):
    with pytest.raises((ValueError, TypeError), match=match):
        matvec(*args)


def test_unknown_backend_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid: auto, ref, cpp"):
        matvec(*_args(), backend="blas")


@needs_ext
def test_opcheck():
    x, w, b = _args()
    for args in ((x, w, b), (x.T.contiguous().T, w.T.contiguous().T, None), _args(1, 4, 8, dtype=torch.float32)):
        torch.library.opcheck(torch.ops.seqzoo.matvec.default, args)


@needs_ext
def test_model_step_runs_its_linear_layers_through_the_kernel(monkeypatch):
    """The gated MLP's two products and the LM head of ``model.step`` go through matvec's
    kernel, and the step still equals the last position of the parallel forward."""
    torch.manual_seed(0)
    model = seqzoo.build_model("s4d", d_model=16, n_layers=2, vocab_size=11, head="lm", mlp_ratio=2).double().eval()
    calls = []
    real = torch.ops.seqzoo.matvec

    class Spy:
        def __getattr__(self, name):
            return getattr(real, name)

        def __call__(self, *a):
            calls.append(tuple(a[1].shape))
            return real(*a)

    monkeypatch.setattr(torch.ops.seqzoo, "matvec", Spy())
    ids = torch.randint(0, 11, (2, 6))
    with torch.no_grad():
        full, _ = model(ids)
        state = None
        for t in range(ids.shape[1]):
            out, state = model.step(ids[:, t], state)
    assert calls.count((64, 16)) == 2 * 6 and calls.count((16, 32)) == 2 * 6 and calls.count((11, 16)) == 6
    assert rel_err(out, full[:, -1]) < 1e-10
