"""Transformer-VQ: softmax attention over vector-quantised keys, in linear time.

Paper: Lingle, "Transformer-VQ: Linear-Time Transformers via Vector Quantization" (ICLR
2024), https://arxiv.org/abs/2309.16354.

Keys are quantised to a learnable codebook C (S codes per head): k̂_t = C[z_t],
z_t = argmin_s |k_t - C_s|. Because every key is one of S vectors, causal softmax
attention over the quantised keys,

    y_t = Σ_{s≤t} exp(q_t·k̂_s) v_s / Σ_{s≤t} exp(q_t·k̂_s),                 (dense, O(L²))

can be computed block-wise (the paper's §3: the quadratic-time formulation over quantised
keys, then its linear-time block recurrence): with blocks of R tokens, a query
in block n attends to its own block (causal) and to block n-1 with their quantised keys,
and to a *compressive cache* of everything before, which holds per code s the count c_s
and the value sum U_s:

    Σ_{s in blocks ≤ n-2} exp(q·k̂_s) v_s = Σ_codes exp(q·C_s) U_s,   normaliser Σ_codes exp(q·C_s) c_s.

That is *exactly* the dense formula above (all keys quantised, including the current and
previous block: the window is kept uncompressed only because the cache lags one block), in
O(L·(R + S)) time. Scores use log-count biases and a shared max for stability. As in the
paper: q and k are LayerNorm-ed without gain and scaled by d_k^(-1/4); v = SiLU(x W_v);
the output is gated, y = W_o (attn ⊙ SiLU(x W_g)) (single-head gated attention by default).
The paper's Transformer-XL position biases inside the window are left out, so that the
layer stays exactly the dense formula; positions enter only through causality.

Quantiser (§3): straight-through estimator inside the window, commitment loss
β Σ|k - sg(k̂)|² (exposed as ``layer.aux_loss`` after each forward), and a codebook kept as
exponential moving averages of assigned keys (counts and sums, rate ``ema_decay``),
updated only by training-mode forwards, never by ``step``.

Recurrent form: block-wise with the cache as state: the state holds the cache (counts,
sums), the codes and values of the previous block and of the current partial block, and the
position; ``step`` adds a token to the partial block and, when the block completes, folds
the previous block into the cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from seqzoo.layer import LayerInputError, SequenceLayer, no_autocast, ssm_dtype
from seqzoo.modules.blocks import splice, take_rows, unsplice
from seqzoo.registry import register
from seqzoo.tracing import is_tracing


@dataclass
class TransformerVQConfig:
    d_model: int
    n_heads: int = 1  # the paper's "shga": one gated head
    head_dim: int = 128  # d_k, the query/key size
    # value width = expand * d_model, split over heads. The paper's layers use 2 (they also
    # replace the MLP); seqzoo's backbone puts an MLP after every mixer, and with expand=1 and
    # head_dim = d_model/2 the layer has exactly the parameter count of `attention`.
    expand: int = 1
    n_codes: int = 256  # S, codebook size per head
    block_size: int = 128  # R
    ema_decay: float = 0.99  # codebook EMA rate (the paper's c_gamma)
    commit_weight: float = 1e-4  # β of the commitment loss (the paper's c_beta)
    bias: bool = False

    def __post_init__(self):
        if self.n_heads < 1 or self.head_dim < 1 or self.n_codes < 1 or self.block_size < 1:
            raise ValueError("n_heads, head_dim, n_codes and block_size must be >= 1")
        if (self.expand * self.d_model) % self.n_heads:
            raise ValueError(f"n_heads={self.n_heads} must divide the value width expand*d_model={self.expand * self.d_model}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        if self.commit_weight < 0:
            raise ValueError(f"commit_weight must be >= 0, got {self.commit_weight}")


class TransformerVQState(NamedTuple):
    counts: Tensor  # (B, H, S): tokens per code in the compressive cache
    sums: Tensor  # (B, H, S, dv): sum of those tokens' values
    z_buf: Tensor  # (B, 2R, H) long: codes of the previous block, then of the current partial block (-1: empty)
    v_buf: Tensor  # (B, 2R, H, dv): their values (0: empty)
    pos: Tensor  # (B,) long: tokens seen


def _masked_log(counts: Tensor, neg: float) -> Tensor:
    """log c where c > 0, ``neg`` where c = 0 (an empty code gets no weight)."""
    return torch.where(counts > 0, torch.log(counts.clamp(min=1.0)), torch.full_like(counts, neg))


@register("transformer_vq", config=TransformerVQConfig)
class TransformerVQ(SequenceLayer):
    """Transformer-VQ attention: block-wise softmax over VQ keys with a compressive cache.
    x (B, L, D) -> y (B, L, D). After a forward, ``layer.aux_loss`` holds the weighted
    commitment loss (add it to the training loss)."""

    supports_lengths = True
    State = TransformerVQState
    test_variants = (
        {"n_heads": 2, "head_dim": 8, "n_codes": 8, "block_size": 4},
        {"head_dim": 4, "n_codes": 16, "block_size": 8, "expand": 2},
        {"head_dim": 8, "n_codes": 4, "block_size": 5},
    )

    def __init__(self, config: TransformerVQConfig):
        super().__init__(config)
        H, dk, S = config.n_heads, config.head_dim, config.n_codes
        self.n_heads, self.dk, self.dv, self.S = H, dk, config.expand * config.d_model // H, S
        self.proj = nn.Linear(config.d_model, H * (2 * dk + 2 * self.dv), bias=config.bias)  # q, k, v, gate
        self.out = nn.Linear(H * self.dv, config.d_model, bias=config.bias)
        # EMA codebook (not trained by gradients): C = c_sum / c_count
        self.register_buffer("c_sum", torch.randn(H, S, dk) * dk**-0.25)
        self.register_buffer("c_count", torch.ones(H, S))
        self.keep_fp32("c_sum", "c_count")  # EMA steps of 1 - ema_decay are below bf16's resolution
        self.aux_loss: Tensor | None = None

    # ---------------------------------------------------------------- pieces
    def codebook(self, dtype: torch.dtype | None = None) -> Tensor:
        """(H, S, d_k) code vectors."""
        c = self.c_sum / self.c_count.clamp(min=0.01)[..., None]
        return c if dtype is None else c.to(dtype)

    def quantize(self, k: Tensor, C: Tensor) -> Tensor:
        """Nearest code per key: k (..., H, d_k), C (H, S, d_k) -> z (..., H) long."""
        lead = k.shape[:-2]
        kh = rearrange(k, "... h d -> h (...) d")  # (H, M, d_k)
        # |k - C_s|² = |k|² - 2 k·C_s + |C_s|²; |k|² does not change the argmin
        d2 = torch.baddbmm(C.square().sum(-1)[:, None, :], kh, C.transpose(-1, -2), alpha=-2.0)  # (H, M, S)
        return d2.argmin(-1).T.reshape(*lead, self.n_heads)

    def _gather_codes(self, z: Tensor, C: Tensor) -> Tensor:
        """C[h, z] for z (..., H) (entries < 0 give code 0; mask them yourself) -> (..., H, d_k)."""
        heads = torch.arange(self.n_heads, device=z.device)
        return C[heads, z.clamp(min=0)]

    def _project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """x (B, L, D) -> q, k (B, L, H, d_k), v (B, L, H, dv), gate (B, L, H*dv)."""
        H, dk, dv = self.n_heads, self.dk, self.dv
        h = self.proj(x).to(ssm_dtype(x))
        q, k, vg = h.split([H * dk, H * dk, 2 * H * dv], dim=-1)
        v, g = F.silu(vg, inplace=not (torch.is_grad_enabled() and h.requires_grad)).split([H * dv, H * dv], dim=-1)
        scale = torch.full((dk,), dk**-0.25, dtype=q.dtype, device=q.device)  # LayerNorm without a learned gain, · d_k^(-1/4)
        q, k = (F.layer_norm(rearrange(t, "b l (h d) -> b l h d", h=H), (dk,), weight=scale) for t in (q, k))
        return q, k, rearrange(v, "b l (h d) -> b l h d", h=H), g

    # ---------------------------------------------------------------- parallel form
    def _forward(self, x, state, lengths, return_state):
        B, L, _ = x.shape
        R, S, H, dv = self.config.block_size, self.S, self.n_heads, self.dv
        fresh = state is None  # nothing buffered: no per-row splice
        if fresh:
            state = self._init_state(B, x.device, ssm_dtype(x))
        q, k, v, gate = self._project(x)
        dtype = q.dtype
        neg = torch.finfo(dtype).min
        C = self.codebook(dtype)  # (H, S, dk)
        z = self.quantize(k, C)  # (B, L, H)
        k_hat = self._gather_codes(z, C)
        valid_new = torch.ones(B, L, dtype=torch.bool, device=x.device)
        if lengths is not None:
            valid_new = torch.arange(L, device=x.device)[None, :] < lengths[:, None]
        n_real = valid_new.sum(1)
        self._training_side_effects(k, k_hat, z, valid_new)
        if torch.is_grad_enabled() and k.requires_grad:
            k_hat = k + (k_hat - k).detach()  # straight-through: gradients reach k inside the window

        # E = [current partial block | new tokens], aligned to absolute blocks of R
        p = state.pos % R  # (B,) tokens of the current block already in the state
        n_buf = None if fresh else p
        slots = torch.arange(R, device=x.device)[None, :]
        E_valid = splice(slots < p[:, None], n_buf, valid_new, R)  # (B, T) real tokens
        E_z = torch.where(E_valid[..., None], splice(state.z_buf[:, R:], n_buf, z, R), -1)  # (B, T, H)
        E_k = splice(self._gather_codes(state.z_buf[:, R:], C), n_buf, k_hat, R)  # (B, T, H, dk)
        E_v = splice(state.v_buf[:, R:], n_buf, v, R)
        E_q = splice(q.new_zeros(B, R, H, self.dk), n_buf, q, R)
        qb, kb, vb = (rearrange(t, "b (n r) h d -> b h n r d", r=R) for t in (E_q, E_k, E_v))
        zb = rearrange(E_z, "b (n r) h -> b h n r", r=R)
        okb = rearrange(E_valid, "b (n r) -> b 1 n r", r=R)  # (B, 1, N, R)
        N = qb.shape[2]
        # the block before E's first block: the state's previous block (empty at the start)
        k0 = rearrange(self._gather_codes(state.z_buf[:, :R], C), "b r h d -> b h 1 r d")
        v0 = rearrange(state.v_buf[:, :R].to(dtype), "b r h d -> b h 1 r d")
        ok0 = (state.pos >= R)[:, None, None, None].expand(B, 1, 1, R)

        causal = torch.ones(R, R, dtype=torch.bool, device=x.device).tril()
        # (in-place ops below act only on fresh matmul/cat outputs, which autograd does not save)
        # Scores and the softmax in ssm_dtype: under autocast the matmuls return bf16/fp16
        # (``.to`` is free otherwise), whose range cannot hold the -inf stand-in ``neg``.
        s_own = (qb @ kb.transpose(-1, -2)).to(dtype).masked_fill(~(causal & okb[..., None, :]), neg)  # (B, H, N, R, R)
        s_prev = torch.cat([qb[:, :, :1] @ k0.transpose(-1, -2), qb[:, :, 1:] @ kb[:, :, :-1].transpose(-1, -2)], dim=2).to(dtype)
        s_prev = s_prev.masked_fill(~torch.cat([ok0, okb[:, :, :-1]], dim=2)[..., None, :], neg)

        # The compressive cache. "Extended" blocks: e = 0 is the state's previous block,
        # e = j + 1 is E's block j. Query block n sees the state's cache + extended blocks < n.
        BH = B * H
        z0 = torch.where(ok0, rearrange(state.z_buf[:, :R], "b r h -> b h 1 r"), S)
        zd = torch.cat([z0, torch.where(okb, zb, S)], dim=2)  # (B, H, N+1, R); code S collects empty slots
        base = torch.arange(BH * (N + 1), device=x.device).view(B, H, N + 1, 1) * (S + 1)
        # counts per (row, head, block, code): a scatter into a fixed-size tensor (bincount's
        # output size would depend on the data, which torch.compile cannot trace)
        flat = (base + zd).flatten()
        cnt = torch.zeros(BH * (N + 1) * (S + 1), dtype=dtype, device=x.device).index_add_(
            0, flat, torch.ones(flat.shape, dtype=dtype, device=x.device)
        ).view(B, H, N + 1, S + 1)[..., :S]
        cnt_before = state.counts.to(dtype)[:, :, None] + torch.cat([torch.zeros_like(cnt[:, :, :1]), cnt.cumsum(2)], dim=2)  # (B, H, N+2, S)
        cnt_q = cnt_before[:, :, :N]  # (B, H, N, S)
        s_cache = torch.einsum("bhnrd,hsd->bhnrs", qb, C).to(dtype).masked_fill((cnt_q == 0)[..., None, :], neg)

        with torch.no_grad():
            m = torch.maximum(torch.maximum(s_own.amax(-1), s_prev.amax(-1)), s_cache.amax(-1))[..., None]
        a_own, a_prev, a_cache = s_own.sub_(m).exp_(), s_prev.sub_(m).exp_(), s_cache.sub_(m).exp_()
        # Σ_codes exp(q·C_s) (c_s, U_s): the cache weighs each code by its count and value sum
        num = (a_own @ vb).to(dtype)  # the local blocks' matmuls may run under autocast
        num[:, :, :1] += a_prev[:, :, :1] @ v0
        num[:, :, 1:] += a_prev[:, :, 1:] @ vb[:, :, :-1]
        # The cache's counts and value sums grow with L: fp32 at least, autocast or not
        # (bf16 holds integers exactly only up to 256, fp16 overflows at 65504).
        with no_autocast(x.device):
            den = a_own.sum(-1) + a_prev.sum(-1) + (a_cache @ cnt_q[..., None])[..., 0]  # (B, H, N, R)
            # value sums: a short loop over blocks carries one (S, dv) running sum (index_add
            # of a block's values at their codes) instead of materialising it for every block.
            U = torch.cat([state.sums.to(dtype), state.sums.new_zeros(B, H, 1, dv).to(dtype)], dim=2).view(BH * (S + 1), dv)
            rows_bh = torch.arange(BH, device=x.device).view(B, H, 1) * (S + 1)
            # The new state's value sums are U0 + Σ over extended blocks < g (g: the E block
            # holding each row's next token), picked up as the loop passes (no .tolist()).
            end = (0 if fresh else p) + n_real  # E index after each row's last real token
            g = torch.div(end, R, rounding_mode="floor")
            U_new = U.view(B, H, S + 1, dv)
            for n in range(N):
                num[:, :, n] += a_cache[:, :, n] @ U.view(B, H, S + 1, dv)[:, :, :S]
                block_v = v0[:, :, 0] if n == 0 else vb[:, :, n - 1]  # extended block n
                U = U.index_add(0, (rows_bh + zd[:, :, n]).flatten(), block_v.reshape(BH * R, dv))
                if return_state:
                    U_new = torch.where((g == n + 1)[:, None, None, None], U.view(B, H, S + 1, dv), U_new)
        o = unsplice(rearrange(num / den[..., None], "b h n r d -> b (n r) (h d)"), n_buf, L)  # (B, L, H*dv)
        y = self.out((o * gate).to(x.dtype))
        if not return_state:
            return y, None

        first = (g >= 1)[:, None, None]
        prev_start = (g - 1).clamp(min=0) * R
        z_prev = torch.where(first, take_rows(E_z, prev_start, R), state.z_buf[:, :R])
        v_prev = torch.where(first[..., None], take_rows(E_v, prev_start, R), state.v_buf[:, :R].to(dtype))
        rows = torch.arange(B, device=x.device)
        new = TransformerVQState(
            cnt_before[rows, :, g],  # the new previous block is extended block g: cache = blocks < g
            U_new[:, :, :S],
            torch.cat([z_prev, take_rows(E_z, g * R, R, end - g * R, fill=-1)], dim=1),
            torch.cat([v_prev, take_rows(E_v, g * R, R, end - g * R)], dim=1),
            state.pos + n_real,
        )
        return y, new

    def _training_side_effects(self, k: Tensor, k_hat: Tensor, z: Tensor, valid: Tensor) -> None:
        """aux_loss (commitment) for every forward; EMA codebook update in training mode."""
        w = valid[..., None].to(k.dtype)  # (B, L, 1)
        n = (w.sum() * self.n_heads).clamp(min=1.0)
        commit = ((k - k_hat.detach()).square().sum(-1) * w).sum() / n
        self.aux_loss = self.config.commit_weight * commit
        if not self.training:
            return
        with torch.no_grad():
            onehot = F.one_hot(z, self.S).to(k.dtype) * w[..., None]  # (B, L, H, S)
            gamma = self.config.ema_decay
            self.c_count.mul_(gamma).add_((1 - gamma) * onehot.sum((0, 1)).to(self.c_count.dtype))
            self.c_sum.mul_(gamma).add_((1 - gamma) * torch.einsum("blhs,blhd->hsd", onehot, k.detach()).to(self.c_sum.dtype))

    # ---------------------------------------------------------------- recurrent form
    def _step(self, x_t, state):
        q, k, v, gate = (t[:, 0] for t in self._project(x_t[:, None]))  # (B, H, d)
        with no_autocast(x_t.device):  # one token: the attention and cache update in ssm_dtype
            o, new_state = self._attend_step(q, k, v, state)
        return self.out((rearrange(o, "b h d -> b (h d)") * gate).to(x_t.dtype)), new_state

    def _attend_step(self, q, k, v, state):
        """q, k, v (B, H, d) of one token -> (attention output (B, H, dv), new state)."""
        R = self.config.block_size
        dtype = q.dtype
        neg = torch.finfo(dtype).min
        C = self.codebook(dtype)
        z = self.quantize(k, C)  # (B, H)
        p = state.pos % R
        slots = torch.arange(2 * R, device=q.device)[None, :]  # (1, 2R)
        here = slots == (R + p)[:, None]  # (B, 2R)
        z_buf = torch.where(here[..., None], z[:, None], state.z_buf)
        v_buf = torch.where(here[..., None, None], v[:, None], state.v_buf.to(dtype))
        ok = (slots <= (R + p)[:, None]) & ((slots >= R) | (state.pos[:, None] >= R))  # (B, 2R)

        s_loc = torch.einsum("bhd,brhd->bhr", q, self._gather_codes(z_buf, C)).masked_fill(~ok[:, None], neg)
        counts, sums = state.counts.to(dtype), state.sums.to(dtype)
        s_cache = torch.einsum("bhd,hsd->bhs", q, C) + _masked_log(counts, neg)
        m = torch.maximum(s_loc.amax(-1), s_cache.amax(-1))[..., None]
        a_loc, a_cache = torch.exp(s_loc - m), torch.exp(s_cache - m)
        num = torch.einsum("bhr,brhd->bhd", a_loc, v_buf) + torch.einsum("bhs,bhsd->bhd", a_cache, sums / counts.clamp(min=1.0)[..., None])
        o = num / (a_loc.sum(-1) + a_cache.sum(-1))[..., None]

        done = p == R - 1  # the block is complete: the previous block joins the cache
        if is_tracing() or bool(done.any()):  # eager: skip the cache update on most steps
            prev_ok = (ok[:, :R] & done[:, None])[..., None]  # (B, R, 1)
            onehot = F.one_hot(z_buf[:, :R].clamp(min=0), self.S).to(dtype) * prev_ok[..., None]  # (B, R, H, S)
            counts = counts + onehot.sum(1)
            sums = sums + torch.einsum("brhs,brhd->bhsd", onehot, v_buf[:, :R])
            shifted_z = torch.cat([z_buf[:, R:], torch.full_like(z_buf[:, R:], -1)], dim=1)
            shifted_v = torch.cat([v_buf[:, R:], torch.zeros_like(v_buf[:, R:])], dim=1)
            z_buf = torch.where(done[:, None, None], shifted_z, z_buf)
            v_buf = torch.where(done[:, None, None, None], shifted_v, v_buf)
        return o, TransformerVQState(counts, sums, z_buf, v_buf, state.pos + 1)

    def _init_state(self, batch_size, device, dtype):
        H, S, R, dv = self.n_heads, self.S, self.config.block_size, self.dv
        dtype = torch.promote_types(dtype, torch.float32)
        return TransformerVQState(
            torch.zeros(batch_size, H, S, device=device, dtype=dtype),
            torch.zeros(batch_size, H, S, dv, device=device, dtype=dtype),
            torch.full((batch_size, 2 * R, H), -1, dtype=torch.long, device=device),
            torch.zeros(batch_size, 2 * R, H, dv, device=device, dtype=dtype),
            torch.zeros(batch_size, dtype=torch.long, device=device),
        )

    def _check_state_shapes(self, state):
        super()._check_state_shapes(state)
        if state.z_buf.dtype != torch.long:
            raise LayerInputError(f"{self.name}: state.z_buf must hold long code indices, got {state.z_buf.dtype}")

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"d_model={c.d_model}, n_heads={c.n_heads}, head_dim={c.head_dim}, dv={self.dv}, "
            f"n_codes={c.n_codes}, block_size={c.block_size}"
        )


__all__ = ["TransformerVQ", "TransformerVQConfig", "TransformerVQState"]
