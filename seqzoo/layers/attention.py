"""Causal multi-head softmax attention with RoPE: the quadratic baseline.

Paper: Vaswani et al., "Attention Is All You Need" (2017), eq. (1): softmax(QKᵀ/√d)V,
with rotary position embeddings (RoFormer, eq. (34); :mod:`seqzoo.modules.rope`).
Parallel form: ``scaled_dot_product_attention`` with a causal mask. Recurrent form: a
KV cache, which is also the carried state, so chunked prefill and streaming agree with
the full forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from seqzoo.layer import LayerInputError, SequenceLayer
from seqzoo.modules.rope import rope_cos_sin, rope_qkv
from seqzoo.registry import register


@dataclass
class AttentionConfig:
    d_model: int
    n_heads: int = 4
    rope: bool = True
    rope_base: float = 10000.0
    bias: bool = False
    dropout: float = 0.0  # attention-probability dropout (training only)

    def __post_init__(self):
        if self.n_heads < 1 or self.d_model % self.n_heads:
            raise ValueError(f"n_heads={self.n_heads} must divide d_model={self.d_model}")
        if self.rope and (self.d_model // self.n_heads) % 2:
            raise ValueError(
                f"RoPE needs an even head size, got d_model/n_heads = {self.d_model // self.n_heads}; "
                "change n_heads or set rope=False"
            )


class KVCache(NamedTuple):
    k: Tensor  # (B, n_heads, T, head_dim), RoPE already applied
    v: Tensor  # (B, n_heads, T, head_dim)
    valid: Tensor  # (B, T) bool: False for right-padding that entered the cache


@register("attention", config=AttentionConfig)
class Attention(SequenceLayer):
    """Causal softmax attention. x (B, L, D) -> y (B, L, D); state = KV cache."""

    supports_lengths = True
    state_grows = True  # the KV cache gains a token per step
    State = KVCache
    test_variants = ({}, {"rope": False, "n_heads": 2})

    def __init__(self, config: AttentionConfig):
        super().__init__(config)
        self.n_heads = config.n_heads
        self.head_dim = config.d_model // config.n_heads
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=config.bias)
        self.proj = nn.Linear(config.d_model, config.d_model, bias=config.bias)

    def _qkv(self, x: Tensor, positions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, L, D), positions (B, L), or (1, L) when every row has the same -> q, k, v
        (B, nh, L, hd). q and k are rotated in one pass (a contiguous (2, B, nh, L, hd) result)."""
        y = self.qkv(x)
        if not self.config.rope:
            return rearrange(y, "b l (three h d) -> three b h l d", three=3, h=self.n_heads).unbind(0)
        cos, sin = rope_cos_sin(positions, self.head_dim, self.config.rope_base, dtype=y.dtype)  # (B|1, L, hd/2)
        return rope_qkv(y, self.n_heads, cos, sin)

    def _attend(self, q, k, v, mask=None, causal=False):
        p = self.config.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=causal)
        return self.proj(rearrange(y, "b h l d -> b l (h d)"))

    def _forward(self, x, state, lengths, return_state):
        B, L, _ = x.shape
        positions = torch.arange(L, device=x.device)[None]  # (1, L): the same for every row
        if state is not None:
            positions = state.valid.sum(-1)[:, None] + positions  # (B, L)
        q, k, v = self._qkv(x, positions)
        new_valid = (
            torch.arange(L, device=x.device)[None, :] < lengths[:, None]
            if lengths is not None
            else torch.ones(B, L, dtype=torch.bool, device=x.device)
        )
        if state is None:
            y = self._attend(q, k, v, causal=True)  # padding sits after real tokens: causal masks it
            return y, KVCache(k, v, new_valid)
        k_all = torch.cat([state.k, k], dim=2)
        v_all = torch.cat([state.v, v], dim=2)
        T = state.k.shape[2]
        causal = torch.ones(L, L, dtype=torch.bool, device=x.device).tril()
        mask = torch.cat([state.valid[:, None, :].expand(B, L, T), causal.expand(B, L, L)], dim=-1)
        y = self._attend(q, k_all, v_all, mask=mask[:, None])  # (B, 1, L, T + L)
        return y, KVCache(k_all, v_all, torch.cat([state.valid, new_valid], dim=1))

    def _step(self, x_t, state):
        B = x_t.shape[0]
        positions = state.valid.sum(-1, keepdim=True)  # (B, 1)
        q, k, v = self._qkv(x_t[:, None], positions)
        valid = torch.cat([state.valid, torch.ones(B, 1, dtype=torch.bool, device=x_t.device)], dim=1)
        k_all, v_all = torch.cat([state.k, k], dim=2), torch.cat([state.v, v], dim=2)
        y = self._attend(q, k_all, v_all, mask=valid[:, None, None, :])
        return y[:, 0], KVCache(k_all, v_all, valid)

    def _init_state(self, batch_size, device, dtype):
        empty = torch.zeros(batch_size, self.n_heads, 0, self.head_dim, device=device, dtype=dtype)
        return KVCache(empty, empty.clone(), torch.zeros(batch_size, 0, dtype=torch.bool, device=device))

    def _check_state_shapes(self, state):
        k, v, valid = state
        want = (self.n_heads, self.head_dim)
        if k.dim() != 4 or (k.shape[1], k.shape[3]) != want or v.shape != k.shape:
            raise LayerInputError(
                f"{self.name}: cache k/v must be (B, {self.n_heads}, T, {self.head_dim}), got {tuple(k.shape)} / {tuple(v.shape)}"
            )
        if valid.shape != k.shape[:1] + k.shape[2:3] or valid.dtype != torch.bool:
            raise LayerInputError(f"{self.name}: cache valid must be a (B, T) bool tensor, got {tuple(valid.shape)} {valid.dtype}")

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_heads={self.n_heads}, rope={self.config.rope}"
