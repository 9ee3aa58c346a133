"""Layers whose state is tied to absolute blocks (and linear_attn, whose RoPE positions
are) continue correctly from a batch state in which rows have seen different numbers of
tokens (as after a forward with ``lengths``): each row must equal its unpadded run. The
generated tests continue one row at a time; this one continues the ragged batch at once,
which takes the per-row path of :mod:`seqzoo.modules.blocks`."""

from __future__ import annotations

import pytest
import torch

import seqzoo
from seqzoo.modules.blocks import splice, take_rows, unsplice
from tests.helpers import rel_err

CASES = [
    ("linear_attn", {"rope": True, "decay": "retnet", "chunk_size": 4}),
    ("transnormer", {"attention": "diag", "block_size": 4}),
    ("transnormer", {}),
    ("gau", {"head_dim": 8, "chunk_size": 4}),
    ("transformer_vq", {"n_heads": 2, "head_dim": 8, "n_codes": 8, "block_size": 4}),
]


@pytest.mark.parametrize("name, opts", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_ragged_batch_state_continues_each_row(name, opts):
    torch.manual_seed(0)
    layer = seqzoo.build(name, d_model=16, **opts).double().eval()
    g = torch.Generator().manual_seed(2)
    lengths = torch.tensor([13, 6, 1, 8])
    x1 = torch.randn(4, 13, 16, generator=g, dtype=torch.float64)
    x2 = torch.randn(4, 9, 16, generator=g, dtype=torch.float64)
    _, s = layer(x1, lengths=lengths)
    y_batch, s_batch = layer(x2, s)
    for b, n in enumerate(lengths.tolist()):
        _, s_row = layer(x1[b : b + 1, :n])
        y_row, s_row2 = layer(x2[b : b + 1], s_row)
        assert rel_err(y_batch[b : b + 1], y_row) < 1e-10
        for f, got, want in zip(s_batch._fields, s_batch, s_row2):
            if got.is_floating_point():
                assert rel_err(got[b : b + 1], want) < 1e-10, f
            else:
                assert torch.equal(got[b : b + 1], want), f
    # and stepping the ragged batch equals stepping each row
    y_t, _ = layer.step(x2[:, 0], s)
    for b, n in enumerate(lengths.tolist()):
        _, s_row = layer(x1[b : b + 1, :n])
        assert rel_err(y_t[b : b + 1], layer.step(x2[b : b + 1, 0], s_row)[0]) < 1e-10


def test_splice_helpers():
    buf = torch.arange(2 * 3).view(2, 3, 1).float() + 100  # rows: [100, 101, 102], [103, 104, 105]
    new = torch.arange(2 * 2).view(2, 2, 1).float()  # [0, 1], [2, 3]
    n_buf = torch.tensor([1, 3])
    E = splice(buf, n_buf, new, block=3)
    assert E.shape == (2, 6, 1)
    assert E[0, :, 0].tolist() == [100, 0, 1, 0, 0, 0]
    assert E[1, :, 0].tolist() == [103, 104, 105, 2, 3, 0]
    assert torch.equal(unsplice(E, n_buf, 2), new)
    uniform = splice(buf, torch.tensor([2, 2]), new, block=2)
    assert uniform[:, :, 0].tolist() == [[100, 101, 0, 1], [103, 104, 2, 3]]
    rows = take_rows(E, torch.tensor([3, 3]), 3, keep=torch.tensor([0, 2]), fill=-1)
    assert rows[:, :, 0].tolist() == [[-1, -1, -1], [2, 3, -1]]
    assert take_rows(E, torch.tensor([5, 5]), 3)[:, :, 0].tolist() == [[0, 0, 0], [0, 0, 0]]  # past the end: fill
    # nothing buffered (a forward without a state): the new tokens, zero-padded to whole blocks
    fresh = splice(buf, None, new, block=3)
    assert fresh[:, :, 0].tolist() == [[0, 1, 0], [2, 3, 0]]
    assert torch.equal(unsplice(fresh, None, 2), new)
    # the length is a bound from shapes (room for block - 1 buffered tokens), not from n_buf
    assert splice(buf, torch.tensor([0, 0]), new, block=3).shape == (2, 6, 1)
