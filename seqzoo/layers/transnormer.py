"""TransNormer's two token mixers: NormAttention and DiagAttention.

Paper: Qin, Han, Sun, Li, Kong, Barnes, Zhong, "The Devil in Linear Transformer"
(EMNLP 2022), https://arxiv.org/abs/2210.10340.

- ``attention="norm"`` (§4.1, NormAttention, used in the upper layers): linear attention
  *without* the scaling denominator, followed by a normalisation of the output,

      O = XNorm(φ(Q) (φ(K)ᵀ V))       (causal: O_t = XNorm(φ(q_t)ᵀ Σ_{s≤t} φ(k_s) v_sᵀ)),

  with XNorm = RMSNorm or LayerNorm over the concatenated heads. The paper shows the
  denominator is what makes linear-attention gradients unbounded; the norm keeps the
  outputs bounded instead. Parallel form: the chunked op with ``normalize=False``;
  recurrent form: its one-step RNN; the state is S = Σ φ(k) vᵀ per head.
- ``attention="diag"`` (§4.2, DiagAttention, the lower layers): softmax attention restricted
  to non-overlapping blocks of ``block_size`` tokens (block-diagonal; causal inside a block)
  against the "attention dilution" of linear attention. Blocks are absolute (positions
  [nR, (n+1)R)); the recurrent form keeps the current block's keys and values as state.

A model selects the mixer per layer with this option (e.g. ``diag`` for the lower half).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from seqzoo.layer import SequenceLayer, ssm_dtype
from seqzoo.modules.blocks import splice, take_rows, unsplice
from seqzoo.modules.feature_maps import build_feature_map
from seqzoo.ops.linear_attn import chunk, recurrent
from seqzoo.registry import register


@dataclass
class TransNormerConfig:
    d_model: int
    n_heads: int = 4
    attention: Literal["norm", "diag"] = "norm"  # NormAttention (upper layers) or DiagAttention (lower)
    feature_map: Literal["elu1", "relu", "identity"] = "elu1"  # φ of NormAttention
    norm: Literal["rms", "layer"] = "rms"  # XNorm after NormAttention
    block_size: int = 64  # DiagAttention block length
    chunk_size: int = 64  # NormAttention: chunk length of the parallel form
    bias: bool = False

    def __post_init__(self):
        if self.n_heads < 1 or self.d_model % self.n_heads:
            raise ValueError(f"n_heads={self.n_heads} must divide d_model={self.d_model}")
        if self.block_size < 1 or self.chunk_size < 1:
            raise ValueError(f"block_size and chunk_size must be >= 1, got {self.block_size}, {self.chunk_size}")


class TransNormerState(NamedTuple):
    S: Tensor  # (B, H, F, head_dim): NormAttention's Σ φ(k) vᵀ  ((B, H, 0, head_dim) for diag)
    k_buf: Tensor  # (B, R, H, head_dim): DiagAttention's current block so far ((B, 0, H, head_dim) for norm)
    v_buf: Tensor  # (B, R, H, head_dim)
    pos: Tensor  # (B,) long: tokens seen


@register("transnormer", config=TransNormerConfig)
class TransNormer(SequenceLayer):
    """TransNormer mixer: NormAttention (``attention="norm"``) or block-diagonal softmax
    attention (``attention="diag"``). x (B, L, D) -> y (B, L, D)."""

    supports_lengths = True
    State = TransNormerState
    test_variants = (
        {},
        {"attention": "diag", "block_size": 4, "n_heads": 2},
        {"attention": "diag", "block_size": 8},
        {"feature_map": "relu", "norm": "layer", "chunk_size": 4},
    )

    def __init__(self, config: TransNormerConfig):
        super().__init__(config)
        D, H = config.d_model, config.n_heads
        self.n_heads, self.head_dim = H, D // H
        self.qkv = nn.Linear(D, 3 * D, bias=config.bias)
        self.out = nn.Linear(D, D, bias=config.bias)
        if config.attention == "norm":
            self.fmap = build_feature_map(config.feature_map, self.head_dim)
            self.xnorm = nn.RMSNorm(D, eps=1e-6) if config.norm == "rms" else nn.LayerNorm(D, eps=1e-6)

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, L, D) -> q, k, v (B, L, H, head_dim) in ssm_dtype(x)."""
        q, k, v = rearrange(self.qkv(x), "b l (three h d) -> three b l h d", three=3, h=self.n_heads)
        dtype = ssm_dtype(x)
        return q.to(dtype), k.to(dtype), v.to(dtype)

    # ---------------------------------------------------------------- NormAttention
    def _norm_attention(self, x, state, lengths, form):
        B, L, _ = x.shape
        q, k, v = rearrange(self.qkv(x).to(ssm_dtype(x)), "b l (three h d) -> three b h l d", three=3, h=self.n_heads).contiguous()
        fq, fk = self.fmap(q, is_query=True), self.fmap(k, is_query=False)  # (B, H, L, F)
        if lengths is not None:  # padding never enters the state
            fk = fk * (torch.arange(L, device=x.device)[None, :] < lengths[:, None])[:, None, :, None]
        o, S = form(fq, fk, v, normalize=False, initial_state=state.S.to(v.dtype), chunk_size=self.config.chunk_size)
        o = self.xnorm(rearrange(o, "b h l d -> b l (h d)").to(x.dtype))
        return self.out(o), state._replace(S=S)

    # ---------------------------------------------------------------- DiagAttention
    def _diag_forward(self, x, state, lengths, fresh):
        B, L, _ = x.shape
        R = self.config.block_size
        q, k, v = self._qkv(x)  # (B, L, H, hd)
        n_buf = None if fresh else state.pos % R  # (B,): tokens of the current block already seen
        E_q = splice(torch.zeros_like(state.k_buf, dtype=q.dtype), n_buf, q, R)  # (B, T, H, hd)
        E_k = splice(state.k_buf, n_buf, k, R)
        E_v = splice(state.v_buf, n_buf, v, R)
        # blocks as 4-D (batch, heads·blocks, R, hd): Inductor's SDPA lowering (torch 2.13)
        # mis-broadcast the causal mask of 5-D (B, H, N, R, hd) inputs and failed to compile
        H = E_q.shape[2]
        qb, kb, vb = (rearrange(t, "b (n r) h d -> b (h n) r d", r=R) for t in (E_q, E_k, E_v))
        o = F.scaled_dot_product_attention(qb, kb, vb, is_causal=True)  # causal within each block
        o = unsplice(rearrange(o, "b (h n) r d -> b (n r) h d", h=H), n_buf, L)  # (B, L, H, hd)
        y = self.out(rearrange(o, "b l h d -> b l (h d)").to(x.dtype))
        n_real = torch.full_like(state.pos, L) if lengths is None else lengths
        end = n_real if fresh else n_buf + n_real  # (B,): E index after each row's last real token
        start = torch.div(end, R, rounding_mode="floor") * R  # the block holding the next token
        keep = end - start
        new = TransNormerState(state.S, take_rows(E_k, start, R, keep), take_rows(E_v, start, R, keep), state.pos + n_real)
        return y, new

    def _diag_step(self, x_t, state):
        R = self.config.block_size
        q, k, v = (t[:, 0] for t in self._qkv(x_t[:, None]))  # (B, H, hd)
        p = state.pos % R  # (B,)
        slots = torch.arange(R, device=x_t.device)[None, :]  # (1, R)
        here = (slots == p[:, None])[..., None, None]  # (B, R, 1, 1)
        k_buf = torch.where(here, k[:, None], state.k_buf)  # (B, R, H, hd)
        v_buf = torch.where(here, v[:, None], state.v_buf)
        s = torch.einsum("bhd,brhd->bhr", q, k_buf) / math.sqrt(self.head_dim)
        s = s.masked_fill((slots > p[:, None])[:, None, :], float("-inf"))
        o = torch.einsum("bhr,brhd->bhd", torch.softmax(s, -1), v_buf)  # (B, H, hd)
        full = (p == R - 1)[:, None, None, None]  # the block is complete: start an empty one
        k_buf, v_buf = k_buf.masked_fill(full, 0.0), v_buf.masked_fill(full, 0.0)
        y = self.out(rearrange(o, "b h d -> b (h d)").to(x_t.dtype))
        return y, TransNormerState(state.S, k_buf, v_buf, state.pos + 1)

    # ---------------------------------------------------------------- forms
    def _forward(self, x, state, lengths, return_state):
        fresh = state is None
        if fresh:
            state = self._init_state(x.shape[0], x.device, ssm_dtype(x))
        if self.config.attention == "norm":
            y, state = self._norm_attention(x, state, lengths, chunk)
            n_real = x.shape[1] if lengths is None else lengths
            return y, state._replace(pos=state.pos + n_real)
        return self._diag_forward(x, state, lengths, fresh)

    def _step(self, x_t, state):
        if self.config.attention == "diag":
            return self._diag_step(x_t, state)
        y, state = self._norm_attention(x_t[:, None], state, None, recurrent)
        return y[:, 0], state._replace(pos=state.pos + 1)

    def _init_state(self, batch_size, device, dtype):
        H, d = self.n_heads, self.head_dim
        dtype = torch.promote_types(dtype, torch.float32)
        norm = self.config.attention == "norm"
        F_ = self.fmap.out_dim if norm else 0
        R = 0 if norm else self.config.block_size
        return TransNormerState(
            torch.zeros(batch_size, H, F_, d, device=device, dtype=dtype),
            torch.zeros(batch_size, R, H, d, device=device, dtype=dtype),
            torch.zeros(batch_size, R, H, d, device=device, dtype=dtype),
            torch.zeros(batch_size, dtype=torch.long, device=device),
        )

    def extra_repr(self) -> str:
        c = self.config
        extra = f"feature_map={c.feature_map!r}, norm={c.norm!r}" if c.attention == "norm" else f"block_size={c.block_size}"
        return f"d_model={c.d_model}, n_heads={c.n_heads}, attention={c.attention!r}, {extra}"


__all__ = ["TransNormer", "TransNormerConfig", "TransNormerState"]
