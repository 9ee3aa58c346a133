"""What the generated layer tests share: every registered layer with each of its
``test_variants`` (a layer added to the registry is under test automatically), and
builders for layers, inputs and step loops on a given device."""

from __future__ import annotations

import pytest
import torch

import seqzoo
from tests.helpers import rel_err

D = 16
B = 2
L = 29


def layer_cases():
    out = []
    for name in seqzoo.list_layers():
        cls = seqzoo.get_layer(name).cls
        for i, variant in enumerate(cls.test_variants):
            out.append(pytest.param(name, variant, id=f"{name}-{i}"))
    return out


CASES = layer_cases()


def make(name, variant, dtype=torch.float64, device="cpu", d_model=D):
    torch.manual_seed(0)
    return seqzoo.build(name, d_model=d_model, **variant).to(device=device, dtype=dtype).eval()


def inputs(dtype=torch.float64, length=L, batch=B, device="cpu", d_model=D, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, length, d_model, generator=g, dtype=dtype).to(device)


def state_err(s1, s2) -> float:
    """The largest relative error over a state's float tensors; integer/bool fields must be equal."""
    assert type(s1) is type(s2), f"{type(s1).__name__} != {type(s2).__name__}"
    errs = [0.0]
    for f, a, b in zip(s1._fields, s1, s2):
        if isinstance(a, torch.Tensor):
            assert a.shape == b.shape, f"state.{f}: {tuple(a.shape)} != {tuple(b.shape)}"
            if a.dtype == torch.bool or not (a.is_floating_point() or a.is_complex()):
                assert torch.equal(a, b), f"state.{f} differs"
            else:
                errs.append(rel_err(a, b))
    return max(errs)


def step_loop(layer, x, state=None):
    ys = []
    for t in range(x.shape[1]):
        y_t, state = layer.step(x[:, t], state)
        ys.append(y_t)
    return torch.stack(ys, dim=1), state


def row(state, b: int):
    """Row b of a batch state, as a batch of one."""
    return type(state)(*(t[b : b + 1] if isinstance(t, torch.Tensor) else t for t in state))


def same_state_err(layer, got, want) -> float:
    """How far state ``got`` is from ``want`` (batch 1 each): field by field where the shapes
    agree; for a cache that grows with padding (attention keeps padded slots, masked by
    ``valid``) by what the state is for: the outputs of continuing from each, forward and step."""
    if all(a.shape == b.shape for a, b in zip(got, want) if isinstance(a, torch.Tensor)):
        return state_err(got, want)
    x_more = inputs(batch=1, length=5, seed=9, device=want[0].device, dtype=want[0].dtype, d_model=layer.d_model)
    (y1, s1), (y2, s2) = layer(x_more, got), layer(x_more, want)
    return max(rel_err(y1, y2), rel_err(layer.step(x_more[:, 0], s1)[0], layer.step(x_more[:, 0], s2)[0]))
