"""Tests generated from the registry: every registered layer, with each of its
``test_variants``, is checked for the interface contract.

- parallel forward == the unrolled ``step`` loop (outputs and final state), float64
- forward over chunks with the state carried == one forward (outputs and final state)
- ``lengths`` together with a carried state: each padded row == its unpadded run from its
  own initial state (outputs and final state)
  (these three also on CUDA when a GPU is present: marker ``cuda``)
- causality: changing x[:, t:] leaves y[:, :t] unchanged
- finite gradients for every parameter and the input
- state structure: batch-first NamedTuple of the layer's State type; ``step`` is pure
- bad input raises LayerInputError / NotImplementedError with a useful message
- ``lengths``: padded rows give the same outputs and state as the unpadded sequences
- an empty sequence (L = 0) returns an empty output and the state unchanged
A layer added to the registry is under these tests automatically (tests/layers/cases.py);
the mixed-precision contract is in test_mixed_precision.py.
"""

from __future__ import annotations

import pytest
import torch

from seqzoo.layer import LayerInputError
from tests.helpers import DEVICES, rel_err
from tests.layers.cases import CASES, B, D, L, make, row, same_state_err, state_err, step_loop
from tests.layers.cases import inputs as _x

TOL64 = 1e-9  # parallel vs recurrent, float64, relative to the output scale


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name, variant", CASES)
def test_parallel_equals_step_loop(name, variant, device):
    layer = make(name, variant, device=device)
    x = _x(device=device)
    if not layer.can_step():
        with pytest.raises(NotImplementedError, match=name):
            layer.step(x[:, 0], None)
        return
    y, state = layer(x)
    y_rec, state_rec = step_loop(layer, x, layer.init_state(B))
    assert y.shape == x.shape
    assert rel_err(y_rec, y) < TOL64
    assert state_err(state_rec, state) < TOL64


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name, variant", CASES)
def test_chunked_with_state_equals_full(name, variant, device):
    layer = make(name, variant, device=device)
    if not (layer.supports_state and layer.can_step()):
        pytest.skip(f"{name} {variant} carries no state")
    x = _x(device=device)
    y, state = layer(x)
    ys, s = [], None
    for lo, hi in [(0, 1), (1, 12), (12, 13), (13, L)]:  # includes length-1 chunks
        y_c, s = layer(x[:, lo:hi], s)
        ys.append(y_c)
    assert rel_err(torch.cat(ys, dim=1), y) < TOL64
    assert state_err(s, state) < TOL64
    # starting from an explicit initial state equals starting from None
    y0, _ = layer(x, layer.init_state(B, dtype=torch.float64))
    assert rel_err(y0, y) < TOL64


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name, variant", CASES)
def test_lengths_with_carried_state(name, variant, device):
    """``layer(x_padded, s0, lengths=...)``: every row's outputs and final state equal the
    unpadded run of that row from its own row of s0. s0 is ragged (rows have seen different
    numbers of tokens), and the rows' lengths include 1 and 0."""
    layer = make(name, variant, device=device)
    if not (layer.supports_lengths and layer.supports_state and layer.can_step()):
        pytest.skip(f"{name} {variant}: needs lengths and a carried state")
    _, s0 = layer(_x(batch=4, length=9, seed=5, device=device), lengths=torch.tensor([9, 4, 7, 2]))
    lengths = torch.tensor([L, 11, 1, 0])
    x = _x(batch=4, device=device)
    garbage = x.clone()
    for b, n in enumerate(lengths.tolist()):
        garbage[b, n:] = 100 * torch.randn_like(garbage[b, n:])
    y, s = layer(garbage, s0, lengths=lengths)
    for b, n in enumerate(lengths.tolist()):
        y_b, s_b = layer(x[b : b + 1, :n], row(s0, b))
        assert rel_err(y[b : b + 1, :n], y_b) < TOL64, f"row {b} (length {n}): outputs"
        assert (y[b, n:] == 0).all(), "outputs at padded positions must be zero"
        assert same_state_err(layer, row(s, b), s_b) < TOL64, f"row {b} (length {n}): final state"


@pytest.mark.parametrize("name, variant", CASES)
def test_causality(name, variant):
    layer = make(name, variant)
    x = _x()
    y, _ = layer(x)
    t = L // 2
    x2 = x.clone()
    x2[:, t:] += torch.randn_like(x2[:, t:])
    y2, _ = layer(x2)
    if layer.is_causal():
        assert rel_err(y2[:, :t], y[:, :t]) < TOL64
    # and the perturbation is visible afterwards (the test could fail the other way)
    assert rel_err(y2[:, t:], y[:, t:]) > 1e-6


@pytest.mark.parametrize("name, variant", CASES)
def test_finite_gradients(name, variant):
    layer = make(name, variant, dtype=torch.float32).train()
    x = _x(torch.float32).requires_grad_()
    y, _ = layer(x, return_state=False)
    (y.square().mean()).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    grads = [(n, p.grad) for n, p in layer.named_parameters() if p.requires_grad]
    assert grads, "layer has no trainable parameters"
    for n, g in grads:
        assert g is not None, f"{n} received no gradient"
        assert torch.isfinite(g).all(), f"{n} has a non-finite gradient"


@pytest.mark.parametrize("name, variant", CASES)
def test_state_structure_and_step_purity(name, variant):
    layer = make(name, variant)
    s0 = layer.init_state(3)
    assert isinstance(s0, layer.State) and isinstance(s0, tuple)
    for f, t in zip(s0._fields, s0):
        if isinstance(t, torch.Tensor):
            assert t.shape[0] == 3, f"state.{f} is not batch-first"
    _, s = layer(_x(batch=3))
    assert type(s) is layer.State
    assert len(s) == len(s0)
    if not layer.can_step():
        return
    before = [t.clone() if isinstance(t, torch.Tensor) else t for t in s]
    _, s_next = layer.step(_x(batch=3)[:, 0], s)
    for f, a, b in zip(s._fields, s, before):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b), f"step modified the input state's {f} in place"
    assert type(s_next) is layer.State


@pytest.mark.parametrize("name, variant", CASES)
def test_return_state_false(name, variant):
    layer = make(name, variant)
    x = _x()
    y, s = layer(x, return_state=False)
    assert s is None
    assert rel_err(y, layer(x)[0]) < TOL64


@pytest.mark.parametrize("name, variant", CASES)
def test_bad_inputs(name, variant):
    layer = make(name, variant)
    x = _x()
    with pytest.raises(LayerInputError, match="d_model"):
        layer(torch.randn(B, L, D + 1, dtype=torch.float64))
    with pytest.raises(LayerInputError, match=r"\(B, L, D\)"):
        layer(x[0])
    with pytest.raises(LayerInputError, match="floating point"):
        layer(torch.ones(B, L, D, dtype=torch.long))
    with pytest.raises(LayerInputError, match="dtype"):
        layer(x.float())
    with pytest.raises(LayerInputError, match="not a|expected|state"):
        layer(x, state=(torch.zeros(B, D),))
    if layer.can_step() and layer.supports_state:
        _, s = layer(x)
        with pytest.raises(LayerInputError, match="batch size"):
            layer(_x(batch=B + 1), s)
        with pytest.raises(LayerInputError, match=r"\(B, D\)"):
            layer.step(x, s)
    if not layer.supports_lengths:
        with pytest.raises(LayerInputError, match="lengths"):
            layer(x, lengths=torch.full((B,), L))
    else:
        with pytest.raises(LayerInputError, match="lengths"):
            layer(x, lengths=torch.tensor([L + 1] * B))
        with pytest.raises(LayerInputError, match="lengths"):
            layer(x, lengths=torch.tensor([1.0] * B))
    with pytest.raises(LayerInputError, match="batch_size"):
        layer.init_state(0)


@pytest.mark.parametrize("name, variant", CASES)
def test_lengths_masking(name, variant):
    layer = make(name, variant)
    if not layer.supports_lengths:
        pytest.skip(f"{name} does not support lengths")
    lengths = torch.tensor([L, 11, 1])
    x = _x(batch=3)
    garbage = x.clone()
    for b, n in enumerate(lengths.tolist()):
        garbage[b, n:] = 100 * torch.randn_like(garbage[b, n:])
    y, s = layer(garbage, lengths=lengths)
    for b, n in enumerate(lengths.tolist()):
        y_b, s_b = layer(x[b : b + 1, :n])
        assert rel_err(y[b : b + 1, :n], y_b) < TOL64
        assert (y[b, n:] == 0).all(), "outputs at padded positions must be zero"
        if layer.can_step() and layer.supports_state:
            s_row = row(s, b)
            # the state after the last real token: continuing from it must match an unpadded run
            x_more = _x(batch=1, length=5)
            y_cont, _ = layer(x_more, s_row)
            y_ref, _ = layer(x_more, s_b)
            assert rel_err(y_cont, y_ref) < TOL64


@pytest.mark.parametrize("name, variant", CASES)
def test_float32_agreement(name, variant):
    """The parallel and recurrent forms agree in float32 too (looser tolerance)."""
    layer = make(name, variant, dtype=torch.float32)
    if not layer.can_step():
        pytest.skip("no recurrent form")
    x = _x(torch.float32, length=64)
    y, _ = layer(x)
    y_rec, _ = step_loop(layer, x)
    assert rel_err(y_rec, y) < 1e-4


@pytest.mark.parametrize("name, variant", CASES)
def test_empty_sequence(name, variant):
    """L = 0 (as nn.LSTM users expect): an empty output, and the state passed through."""
    layer = make(name, variant)
    x = _x(length=0)
    y, s = layer(x)
    assert y.shape == (B, 0, D) and y.dtype == x.dtype
    if not (layer.supports_state and layer.can_step()):
        return
    assert state_err(s, layer.init_state(B)) == 0.0
    _, s0 = layer(_x(length=5))
    y, s = layer(x, s0)
    assert y.shape == (B, 0, D)
    assert state_err(s, s0) == 0.0
    if layer.supports_lengths:
        y, s = layer(x, s0, lengths=torch.zeros(B, dtype=torch.long))
        assert state_err(s, s0) == 0.0
