"""A full model around any registered mixer: encoder -> N residual blocks -> head.

    inputs --(embedding | linear encoder)--> (B, L, D)
           --[residual blocks] x n_layers--> final norm
           --> head: "classify" (pool over real positions, linear to n_classes),
                     "lm" (linear to vocab_size at every position), or "none" (features)

A block is a residual mixer followed by an optional residual MLP, each with its norm:

    pre-norm  (default; GPT-2 / Mamba):  x = x + drop(mixer(norm(x)));  x = x + mlp(norm(x))
    post-norm (``prenorm=False``; S4 on ListOps and CIFAR):  x = norm(x + drop(mixer(x)))

The MLP is gated (GLU with SiLU, Shazeer 2020, "GLU Variants Improve Transformer", eq. (6));
``mlp_ratio=0`` leaves it out, which is the S4/S5 block (their mixers end in their own GLU).
``norm`` is "layernorm", "rmsnorm" or "batchnorm" (statistics over the batch and the real
positions, :class:`~seqzoo.modules.batch_norm.SequenceBatchNorm`; ``step`` then needs eval
mode). The final norm is there by default with pre-norm and absent with post-norm (S4's
backbone); ``final_norm`` sets it explicitly (S5: pre-norm without one). ``tie_dropout``
draws each dropout mask once per (sequence, channel), shared along the sequence (S4's and
S5's dropout): the block's residual/MLP dropout and the mixer's own dropout modules.
``pair=True`` makes a two-tower classifier for pair tasks (LRA Retrieval): one shared
encoder, features [u, v, u*v, u-v] -> MLP -> classes.

``frontend`` (optional module) is applied to the raw inputs first, e.g. a VQ tokenizer
that turns a signal (B, L, C) into token ids (B, L'); it may expose ``downsample`` (an
int factor by which it shortens sequences, used to shorten ``lengths``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqzoo.config import ConfigError, config_from_dict
from seqzoo.modules.batch_norm import SequenceBatchNorm
from seqzoo.modules.tied_dropout import TiedDropout, tie_dropouts
from seqzoo.ops.matvec import run as matvec
from seqzoo.registry import build as build_layer
from seqzoo.registry import get_layer
from seqzoo.tracing import is_tracing

__all__ = ["ModelConfig", "SequenceModel", "build_model"]


@dataclass
class ModelConfig:
    layer: str
    d_model: int = 128
    n_layers: int = 2
    layer_options: dict = field(default_factory=dict)
    vocab_size: int | None = None  # token inputs (B, L) -> embedding
    d_input: int | None = None  # real inputs (B, L, d_input) -> linear encoder
    head: Literal["classify", "lm", "none"] = "classify"
    n_classes: int | None = None
    pool: Literal["mean", "last", "max"] = "mean"
    pair: bool = False  # two-tower pair classification
    norm: Literal["layernorm", "rmsnorm", "batchnorm"] = "layernorm"
    prenorm: bool = True  # norm before the mixer/MLP (residual stream unnormalised) or after the residual sum
    final_norm: bool | None = None  # norm after the last block (None: with pre-norm only)
    bn_momentum: float = 0.1  # BatchNorm running statistics: weight of the new batch (PyTorch's convention)
    mlp_ratio: float = 2.0  # hidden size of the gated MLP / d_model; 0 disables the MLP
    dropout: float = 0.0  # on the mixer's residual branch and in the MLP
    tie_dropout: bool = False  # one dropout mask per (sequence, channel), also for the mixer's dropout modules

    def __post_init__(self):
        if (self.vocab_size is None) == (self.d_input is None):
            raise ValueError("give exactly one of vocab_size (token inputs) or d_input (real-valued inputs)")
        for name in ("vocab_size", "d_input", "n_classes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                what = {"vocab_size": "the number of distinct token ids (ids lie in [0, vocab_size))",
                        "d_input": "the number of features per position of real-valued inputs",
                        "n_classes": "the number of classes of the classifier head"}[name]
                raise ValueError(f"{name} must be a positive int ({what}), got {value}")
        if self.head == "classify" and not self.n_classes:
            raise ValueError("head='classify' needs n_classes")
        if self.head == "lm" and not self.vocab_size:
            raise ValueError("head='lm' needs vocab_size")
        if self.pair and self.head != "classify":
            raise ValueError("pair=True is a classifier: use head='classify'")
        if self.n_layers < 1 or self.d_model < 1:
            raise ValueError(f"n_layers and d_model must be positive, got {self.n_layers} and {self.d_model}")
        if self.mlp_ratio < 0 or not 0 <= self.dropout < 1:
            raise ValueError(f"mlp_ratio must be >= 0 (0 disables the MLP) and dropout in [0, 1), got {self.mlp_ratio}, {self.dropout}")
        if not 0 < self.bn_momentum <= 1:
            raise ValueError(f"bn_momentum must lie in (0, 1] (the weight of the new batch), got {self.bn_momentum}")

    @property
    def has_final_norm(self) -> bool:
        return self.prenorm if self.final_norm is None else self.final_norm


def _norm(cfg: ModelConfig) -> nn.Module:
    if cfg.norm == "batchnorm":
        return SequenceBatchNorm(cfg.d_model, momentum=cfg.bn_momentum)
    return nn.LayerNorm(cfg.d_model) if cfg.norm == "layernorm" else nn.RMSNorm(cfg.d_model)


def _apply_norm(norm: nn.Module, x: Tensor, lengths: Tensor | None) -> Tensor:
    """x (B, L, D) or one step (B, D); only BatchNorm needs ``lengths`` (its statistics)."""
    return norm(x, lengths) if isinstance(norm, SequenceBatchNorm) else norm(x)


def _linear_step(linear: nn.Module, x_t: Tensor) -> Tensor:
    """``linear(x_t)`` for one token (B, D) through :func:`seqzoo.ops.matvec`; a module that
    replaced the ``nn.Linear`` (a subclass, a wrapper) is called as it is."""
    return matvec(x_t, linear.weight, linear.bias) if type(linear) is nn.Linear else linear(x_t)


def _dropout(p: float, tied: bool) -> nn.Module:
    return TiedDropout(p) if tied else nn.Dropout(p)


class GatedMLP(nn.Module):
    def __init__(self, d: int, ratio: float, dropout: float, tied: bool = False):
        super().__init__()
        hidden = max(1, int(round(d * ratio)))
        self.fc = nn.Linear(d, 2 * hidden)
        self.proj = nn.Linear(hidden, d)
        self.drop = _dropout(dropout, tied)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.fc(x).chunk(2, dim=-1)
        return self.drop(self.proj(F.silu(a) * b))

    def step(self, x_t: Tensor) -> Tensor:
        """One token (B, D): forward's arithmetic, the products through
        :func:`seqzoo.ops.matvec` (a decode step's linear layers cost their weight read)."""
        a, b = _linear_step(self.fc, x_t).chunk(2, dim=-1)
        return self.drop(_linear_step(self.proj, F.silu(a) * b))


class Block(nn.Module):
    """Residual mixer (+ residual MLP): pre-norm or post-norm (module docstring)."""

    def __init__(self, mixer: nn.Module, cfg: ModelConfig):
        super().__init__()
        self.prenorm = cfg.prenorm
        self.norm1 = _norm(cfg)
        self.mixer = tie_dropouts(mixer) if cfg.tie_dropout else mixer
        self.drop = _dropout(cfg.dropout, cfg.tie_dropout)
        self.mlp = GatedMLP(cfg.d_model, cfg.mlp_ratio, cfg.dropout, cfg.tie_dropout) if cfg.mlp_ratio > 0 else None
        self.norm2 = _norm(cfg) if self.mlp is not None else None

    # pre-norm: x + f(norm(x)); post-norm: norm(x + f(x))
    def _pre(self, norm: nn.Module, x: Tensor, lengths: Tensor | None) -> Tensor:
        return _apply_norm(norm, x, lengths) if self.prenorm else x

    def _post(self, norm: nn.Module, x: Tensor, lengths: Tensor | None) -> Tensor:
        return x if self.prenorm else _apply_norm(norm, x, lengths)

    def forward(self, x, state=None, lengths=None, return_state=True):
        y, state = self.mixer(self._pre(self.norm1, x, lengths), state, lengths=lengths, return_state=return_state)
        x = self._post(self.norm1, x + self.drop(y), lengths)
        if self.mlp is not None:
            x = self._post(self.norm2, x + self.mlp(self._pre(self.norm2, x, lengths)), lengths)
        return x, state

    def step(self, x_t, state):
        y, state = self.mixer.step(self._pre(self.norm1, x_t, None), state)
        x_t = self._post(self.norm1, x_t + self.drop(y), None)
        if self.mlp is not None:
            x_t = self._post(self.norm2, x_t + self.mlp.step(self._pre(self.norm2, x_t, None)), None)
        return x_t, state


class SequenceModel(nn.Module):
    """Backbone + head. ``forward(inputs, state=None, lengths=None) -> (out, states)``;
    ``step(input_t, states) -> (out_t, states)`` for "lm"/"none" heads."""

    def __init__(self, cfg: ModelConfig, frontend: nn.Module | None = None):
        super().__init__()
        self.config = cfg
        self.frontend = frontend
        D = cfg.d_model
        self.encoder = nn.Embedding(cfg.vocab_size, D) if cfg.vocab_size else nn.Linear(cfg.d_input, D)
        self.blocks = nn.ModuleList(
            Block(build_layer(cfg.layer, d_model=D, **cfg.layer_options), cfg) for _ in range(cfg.n_layers)
        )
        self.norm_f = _norm(cfg) if cfg.has_final_norm else nn.Identity()
        if cfg.head == "classify":
            if cfg.pair:
                self.head = nn.Sequential(nn.Linear(4 * D, D), nn.GELU(), nn.Linear(D, cfg.n_classes))
            else:
                self.head = nn.Linear(D, cfg.n_classes)
        elif cfg.head == "lm":
            self.head = nn.Linear(D, cfg.vocab_size, bias=False)
        else:
            self.head = None

    # ------------------------------------------------------------------ helpers
    @property
    def mixers(self) -> list[nn.Module]:
        return [b.mixer for b in self.blocks]

    def _encode_inputs(self, inputs: Tensor, lengths: Tensor | None):
        if self.frontend is not None:
            inputs = self.frontend(inputs)
            factor = getattr(self.frontend, "downsample", 1)
            if lengths is not None and factor != 1:
                lengths = torch.div(lengths + factor - 1, factor, rounding_mode="floor")
        cfg = self.config
        if cfg.vocab_size:
            if inputs.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
                raise ValueError(f"the model takes token ids (B, L) of an integer dtype, got {inputs.dtype}")
            if inputs.dim() != 2:
                raise ValueError(f"token inputs must be (B, L), got shape {tuple(inputs.shape)}")
            if inputs.numel() and not is_tracing() and (int(inputs.min()) < 0 or int(inputs.max()) >= cfg.vocab_size):
                raise ValueError(
                    f"token ids must lie in [0, {cfg.vocab_size}), got [{int(inputs.min())}, {int(inputs.max())}]"
                )
            x = self.encoder(inputs.long())
        else:
            if inputs.dim() == 2 and cfg.d_input == 1:
                inputs = inputs.unsqueeze(-1)
            if inputs.dim() != 3 or inputs.shape[-1] != cfg.d_input:
                raise ValueError(f"real inputs must be (B, L, {cfg.d_input}), got shape {tuple(inputs.shape)}")
            x = self.encoder(inputs.to(self.encoder.weight.dtype))
        return x, lengths

    def features(self, inputs: Tensor, state=None, *, lengths: Tensor | None = None, return_state: bool = True):
        """Backbone output (B, L, D) and the per-layer states."""
        x, lengths = self._encode_inputs(inputs, lengths)
        states = []
        for i, block in enumerate(self.blocks):
            x, s = block(x, None if state is None else state[i], lengths, return_state)
            states.append(s)
        return _apply_norm(self.norm_f, x, lengths), (tuple(states) if return_state else None), lengths

    def _pool(self, x: Tensor, lengths: Tensor | None) -> Tensor:
        B, L, D = x.shape
        if L == 0:  # nothing to pool: zeros, as for an empty row below
            return x.new_zeros(B, D)
        if lengths is None:
            lengths = torch.full((B,), L, device=x.device, dtype=torch.long)
        pad = torch.arange(L, device=x.device)[None, :] >= lengths[:, None]  # (B, L)
        if self.config.pool == "mean":
            return x.masked_fill(pad[..., None], 0).sum(1) / lengths.clamp(min=1)[:, None].to(x.dtype)
        if self.config.pool == "max":  # an empty row pools to 0, as with "mean"
            return x.masked_fill(pad[..., None], float("-inf")).amax(1).masked_fill((lengths == 0)[:, None], 0.0)
        idx = (lengths - 1).clamp(min=0)
        return x[torch.arange(B, device=x.device), idx].masked_fill((lengths == 0)[:, None], 0.0)

    # ------------------------------------------------------------------ API
    def forward(self, inputs, state=None, *, lengths=None, return_state: bool = False, positions: Tensor | None = None):
        """Classify: logits (B, n_classes). LM: logits (B, L, V). None: features (B, L, D).
        Returns ``(out, states)``; states are None unless ``return_state`` (or a state is given).

        ``positions`` (B, L) bool, for the "lm" and "none" heads: the output at those positions
        only, (n, V | D) in row-major order, i.e. ``out[positions]`` without computing the head
        elsewhere (a task that scores a few positions per sequence under a large vocabulary
        spends most of a step in the head otherwise)."""
        cfg = self.config
        return_state = return_state or state is not None
        if positions is not None:
            if cfg.head == "classify":
                raise ValueError("positions= selects outputs of the 'lm' or 'none' head; a classifier has one output per sequence")
            if positions.dtype != torch.bool or positions.shape != inputs.shape[:2]:
                raise ValueError(f"positions must be a bool mask of the inputs' (B, L) = {tuple(inputs.shape[:2])}, got "
                                 f"{positions.dtype} {tuple(positions.shape)}")
            if self.frontend is not None and getattr(self.frontend, "downsample", 1) != 1:
                raise ValueError("positions= with a downsampling front end: the outputs are not aligned with the inputs")
        if cfg.pair:
            (a, b), (la, lb) = inputs, (lengths if lengths is not None else (None, None))
            u = self._pool(*self.features(a, lengths=la, return_state=False)[::2])
            v = self._pool(*self.features(b, lengths=lb, return_state=False)[::2])
            return self.head(torch.cat([u, v, u * v, u - v], dim=-1)), None
        x, states, lengths = self.features(inputs, state, lengths=lengths, return_state=return_state)
        if cfg.head == "classify":
            return self.head(self._pool(x, lengths)), states
        if positions is not None:
            x = x[positions]
        return (self.head(x) if self.head is not None else x), states

    def init_state(self, batch_size: int, *, device=None, dtype=None):
        return tuple(m.init_state(batch_size, device=device, dtype=dtype) for m in self.mixers)

    def step(self, input_t: Tensor, state=None):
        """One token through every layer: (B,) ids or (B, d_input) values -> (B, V | D)."""
        if self.config.head == "classify":
            raise NotImplementedError("step() is for head='lm' or 'none'; a classifier sees whole sequences")
        if self.frontend is not None:
            raise NotImplementedError("step() with a frontend: tokenize the stream first, then step the ids")
        x, _ = self._encode_inputs(input_t[:, None] if input_t.dim() == 1 else input_t[:, None, :], None)
        x = x[:, 0]
        if state is None:
            state = self.init_state(x.shape[0], device=x.device, dtype=x.dtype)
        new = []
        for block, s in zip(self.blocks, state):
            x, s = block.step(x, s)
            new.append(s)
        x = _apply_norm(self.norm_f, x, None)
        return (_linear_step(self.head, x) if self.head is not None else x), tuple(new)


    # ------------------------------------------------------------------ generation (seqzoo.models.generate)
    def generate(self, prompt_ids: Tensor, max_new_tokens: int, *, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, do_sample: bool = False, eos_id: int | None = None,
                 lengths: Tensor | None = None, generator: torch.Generator | None = None, mode: str = "eager") -> Tensor:
        """Parallel prefill of the prompt, then one recurrent step per new token: (B, L) ids ->
        (B, max_new_tokens) ids. Greedy unless ``do_sample``; ``lengths`` for right-padded,
        ragged prompts; ``mode``: eager | compile | cuda_graph. See
        :func:`seqzoo.models.generate.generate`."""
        from seqzoo.models.generate import generate

        return generate(self, prompt_ids, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                        do_sample=do_sample, eos_id=eos_id, lengths=lengths, generator=generator, mode=mode)

    def stream(self):
        """A :class:`seqzoo.models.generate.Stream`: feed chunks of any size, the state carried."""
        from seqzoo.models.generate import Stream

        return Stream(self)


def build_model(layer: str | ModelConfig | None = None, *, frontend: nn.Module | None = None, **options: Any) -> SequenceModel:
    """Build a full model: ``build_model("s4d", d_model=128, n_layers=4, vocab_size=16,
    n_classes=10, layer_options={"d_state": 64})``. Options are checked against
    :class:`ModelConfig` (and ``layer_options`` against the layer's config)."""
    if isinstance(layer, ModelConfig):
        if options:
            raise ConfigError("build_model: pass either a ModelConfig or options, not both")
        cfg = layer
    else:
        if layer is not None:
            options["layer"] = layer
        cfg = config_from_dict(ModelConfig, options, context="build_model")
    get_layer(cfg.layer)  # unknown layer -> error listing the registered ones
    return SequenceModel(cfg, frontend=frontend)
