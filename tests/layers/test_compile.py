"""The torch.compile contract, generated from the registry: every registered layer, with each
of its ``test_variants``, traces into one graph (``torch._dynamo.explain`` counts no graph
break) in its forward, its forward from a carried state, its forward with ``lengths`` and
its ``step``; compiled with inductor, forward+backward and ``step`` run and agree with eager.

What breaks a graph, and what the layers do instead: data-dependent Python (``int(t.max())``,
``.item()``, ``bool(t.any())``, ``.tolist()``) -> lengths from shapes and branch-free paths
under :func:`seqzoo.tracing.is_tracing`; C++ extension calls -> ``torch.library`` custom ops
with fake kernels (their strides: tests/ops/test_fake_strides.py); the backend choice -> a
constant of the graph (``torch.compiler.assume_constant_result``).

Default suite: the graph-break count of each layer's forward and step (its first test
variant), traced by Dynamo only. Marked ``slow`` (``pytest -m slow``): every variant and
every form, and the inductor compiles (minutes each on two CPU cores).
"""

from __future__ import annotations

import copy

import pytest
import torch

from tests.helpers import rel_err
from tests.layers.cases import CASES, make
from tests.layers.cases import inputs as _x

FIRST = [c for i, c in enumerate(CASES) if i == 0 or CASES[i - 1].values[0] != c.values[0]]


def _breaks(fn, *args, **kwargs) -> list[str]:
    """The graph-break reasons of tracing ``fn(*args, **kwargs)`` (empty: one graph)."""
    torch._dynamo.reset()
    e = torch._dynamo.explain(fn)(*args, **kwargs)
    where = lambda b: f" at {b.user_stack[-1].filename}:{b.user_stack[-1].lineno}" if b.user_stack else ""  # noqa: E731
    return [str(b.reason).splitlines()[0] + where(b) for b in e.break_reasons] + (
        [f"{e.graph_count} graphs"] if e.graph_count > 1 else [])


def _forms(layer, x):
    """(what, fn, args, kwargs) for every form the layer has."""
    forms = [("forward", layer, (x,), {})]
    if layer.supports_lengths:
        forms.append(("forward with lengths", layer, (x,), {"lengths": torch.tensor([x.shape[1], 5])}))
    if layer.can_step() and layer.supports_state:
        _, s = layer(x[:, :5], lengths=torch.tensor([5, 3]) if layer.supports_lengths else None)  # a ragged state
        forms += [("forward from a state", layer, (x, s), {}), ("step", layer.step, (x[:, 0], s), {})]
    return forms


@pytest.mark.parametrize("name, variant", FIRST)
def test_forward_and_step_trace_into_one_graph(name, variant):
    layer = make(name, variant, dtype=torch.float32)
    x = _x(torch.float32)
    forms = [f for f in _forms(layer, x) if f[0] in ("forward", "step")]
    for what, fn, args, kwargs in forms:
        assert _breaks(fn, *args, **kwargs) == [], f"{name} {what}"


@pytest.mark.slow
@pytest.mark.parametrize("name, variant", CASES)
def test_every_form_traces_into_one_graph(name, variant):
    layer = make(name, variant, dtype=torch.float32)
    for what, fn, args, kwargs in _forms(layer, _x(torch.float32)):
        assert _breaks(fn, *args, **kwargs) == [], f"{name} {variant} {what}"


@pytest.mark.slow
@pytest.mark.parametrize("name, variant", CASES)
def test_inductor_forward_backward_equals_eager(name, variant):
    """fullgraph=True: a graph break would raise. Training mode (the EMA codebook of
    transformer_vq updates; each side gets its own copy of the layer). Output and input
    gradient against eager float32; the parameter gradients against eager float64, as close
    as eager float32's own (its worst parameter's): on ill-conditioned variants (S4's LegT and
    FouT measures) float32 is off float64 by 1e-2 and more in Δ's and A's gradients, however
    it is compiled."""
    eager = make(name, variant, dtype=torch.float32).train()
    compiled_layer = copy.deepcopy(eager)
    exact = copy.deepcopy(eager).double()
    torch._dynamo.reset()
    compiled = torch.compile(compiled_layer, fullgraph=True)
    x = _x(torch.float32)
    results = []
    for fn, layer, xx in ((eager, eager, x), (compiled, compiled_layer, x), (exact, exact, x.double())):
        xi = xx.clone().requires_grad_()
        y, _ = fn(xi, return_state=False)
        y.square().mean().backward()
        results.append((y.detach(), xi.grad, [p.grad for p in layer.parameters() if p.requires_grad]))
    (y0, gx0, gp0), (y1, gx1, gp1), (_, _, gp64) = results
    assert rel_err(y1, y0) < 1e-4
    assert rel_err(gx1, gx0) < 1e-4
    # float32's error scale on this variant: eager's worst parameter gradient. One rounding
    # order is one sample of it (S4's LegT: eager's Δ gradient 6e-3 off float64 with its
    # output stage on contiguous rows, 3e-2 on a transposed view; inductor's 1.4e-2 either way).
    scale = max(rel_err(b.double(), c) for b, c in zip(gp0, gp64) if b is not None)
    for a, b, c in zip(gp1, gp0, gp64):
        assert (a is None) == (b is None)
        if a is not None:
            err = rel_err(a.double(), c)
            assert err < 2 * scale + 1e-3, f"compiled {err:.1e}, eager {rel_err(b.double(), c):.1e} (worst {scale:.1e})"


@pytest.mark.slow
@pytest.mark.parametrize("name, variant", CASES)
def test_inductor_step_equals_eager(name, variant):
    layer = make(name, variant, dtype=torch.float32)
    if not layer.can_step():
        pytest.skip("no recurrent form")
    x = _x(torch.float32)
    _, s = layer(x[:, :5])
    torch._dynamo.reset()
    step = torch.compile(layer.step, fullgraph=True)
    with torch.no_grad():
        for t in range(5, 8):  # a few steps: the returned state goes back in
            y_c, s_c = step(x[:, t], s)
            y_e, s_e = layer.step(x[:, t], s)
            assert rel_err(y_c, y_e) < 1e-5
            for a, b in zip(s_c, s_e):
                assert rel_err(a, b) < 1e-5 if a.is_floating_point() or a.is_complex() else torch.equal(a, b)
            s = s_e
