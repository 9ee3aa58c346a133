"""RoPE (seqzoo/modules/rope.py): the attention layer's fused q/k rotation against the
formula written with autograd."""

import pytest
import torch
from einops import rearrange

from seqzoo.modules.rope import apply_rope, rope_cos_sin, rope_qkv


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rows", ["shared", "per_row"])
def test_rope_qkv_is_apply_rope_on_the_projection(dtype, rows):
    """Values and gradients are the same numbers as apply_rope on the rearranged projection
    and autograd's gradient of it (bitwise, in float32 too): the fused form adds the same two
    rounded products per element, and the gradient is placed as autograd's sum with zeros."""
    B, L, H, hd = 3, 11, 2, 8
    g = torch.Generator().manual_seed(0)
    y = torch.randn(B, L, 3 * H * hd, generator=g, dtype=dtype)
    pos = torch.arange(L)[None] if rows == "shared" else torch.randint(0, 50, (B, L), generator=g)
    cos, sin = rope_cos_sin(pos, hd, dtype=dtype)
    grads = [torch.randn(B, H, L, hd, generator=g, dtype=dtype) for _ in range(3)]

    y1 = y.clone().requires_grad_()
    q1, k1, v1 = rope_qkv(y1, H, cos, sin)
    y2 = y.clone().requires_grad_()
    qkv = rearrange(y2, "b l (three h d) -> three b h l d", three=3, h=H)
    q2, k2 = apply_rope(qkv[:2], cos[None, :, None], sin[None, :, None]).unbind(0)
    v2 = qkv[2]
    for a, b in ((q1, q2), (k1, k2), (v1, v2)):
        assert a.shape == (B, H, L, hd) and torch.equal(a, b)
    assert q1.is_contiguous() and k1.is_contiguous()
    sum(((t * gr).sum() for t, gr in zip((q1, k1, v1), grads))).backward()
    sum(((t * gr).sum() for t, gr in zip((q2, k2, v2), grads))).backward()
    assert torch.equal(y1.grad, y2.grad)
    # the rotation preserves norms (each pair is rotated): a check independent of apply_rope
    n_in = y.view(B, L, 3, H, hd)[:, :, 0].transpose(1, 2).norm(dim=-1)
    assert torch.allclose(q1.norm(dim=-1), n_in, rtol=1e-5)
