"""A 1D convolutional VQ-VAE / FSQ autoencoder that turns signals into token ids.

van den Oord et al. (2017), "Neural Discrete Representation Learning" (the VQ-VAE
encoder -> quantiser -> decoder with a reconstruction loss plus the quantiser's loss,
eq. 3), with any quantiser of this package: :class:`~seqzoo.quant.vq.VectorQuantizer`
(straight-through or rotation trick), :class:`~seqzoo.quant.fsq.FSQ` (Mentzer et al. 2023)
or :class:`~seqzoo.quant.gumbel.GumbelQuantizer` (Gumbel-softmax, as DALL-E's dVAE).

    tok = Tokenizer(TokenizerConfig(d_input=1, quantizer="fsq", downsample=4))
    recon, info = tok(x)              # x (B, L, C) -> recon (B, L, C); info["loss"] to minimise
    ids = tok.encode(x)               # (B, ceil(L / downsample)) int64 in [0, tok.vocab_size)
    x_hat = tok.decode(ids)           # (B, L', C) with L' = ids.shape[1] * downsample
    tok.save("runs/tok"); tok = Tokenizer.load("runs/tok")
    model = seqzoo.build_model("s4d", vocab_size=tok.vocab_size, n_classes=10,
                               frontend=tok.as_frontend())   # raw signals in, ids inside

The encoder is a stack of residual conv blocks and strided convolutions, one per factor
of ``downsample`` (e.g. 4 -> 2 x 2, 6 -> 2 x 3); the decoder mirrors it with transposed
convolutions. Inputs are standardised per channel with statistics stored in the model
(``fit_normalizer``), so a front end takes raw signals; reconstructions are returned in
the original scale. Sequences are zero-padded (after standardisation) on the right to a
multiple of ``downsample``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from seqzoo.config import config_from_dict
from seqzoo.quant.fsq import FSQ
from seqzoo.quant.gumbel import GumbelQuantizer
from seqzoo.quant.metrics import masked_mse
from seqzoo.quant.vq import VectorQuantizer

__all__ = ["Tokenizer", "TokenizerConfig", "TokenizerFrontend"]

WEIGHTS = "tokenizer.safetensors"
CONFIG = "config.json"


@dataclass
class TokenizerConfig:
    d_input: int = 1  # channels C of the signal (B, L, C)
    quantizer: Literal["fsq", "vq", "gumbel"] = "fsq"
    downsample: int = 4  # tokens per signal step: L' = ceil(L / downsample)
    width: int = 32  # conv channels
    n_res: int = 1  # residual blocks per resolution
    # FSQ: the latent has len(levels) channels and prod(levels) codes
    levels: tuple[int, ...] = (8, 5, 5, 5)
    # VQ and Gumbel
    codebook_size: int = 512
    d_latent: int = 16  # latent channels fed to the VQ / Gumbel quantiser
    # VQ
    codebook_dim: int | None = None  # < d_latent: codes stored in a lower dim with projections
    distance: Literal["euclidean", "cosine"] = "euclidean"
    codebook_update: Literal["ema", "loss"] = "ema"
    decay: float = 0.99
    commitment_weight: float = 0.25
    kmeans_init: bool = True
    dead_code_steps: int = 100  # 0 disables dead-code restart
    rotation_trick: bool = False
    # Gumbel: straight-through (one-hot forward) or soft; tau decays exponentially from
    # tau_start to the floor tau_min over tau_anneal_steps training steps; KL-to-uniform weight
    gumbel_hard: bool = False
    tau_start: float = 1.0
    tau_min: float = 0.0625
    tau_anneal_steps: int = 1000
    kl_weight: float = 1e-2

    def __post_init__(self):
        if self.d_input < 1 or self.width < 1 or self.n_res < 0:
            raise ValueError("d_input and width must be positive and n_res >= 0")
        if self.downsample < 1:
            raise ValueError(f"downsample must be an integer >= 1, got {self.downsample}")
        if self.quantizer == "fsq" and (not self.levels or any(l < 2 for l in self.levels)):
            raise ValueError(f"FSQ levels must be integers >= 2, got {self.levels}")
        if self.quantizer in ("vq", "gumbel") and (self.codebook_size < 2 or self.d_latent < 1):
            raise ValueError(f"{self.quantizer} needs codebook_size >= 2 and d_latent >= 1, "
                             f"got {self.codebook_size}, {self.d_latent}")

    @property
    def latent_dim(self) -> int:
        return len(self.levels) if self.quantizer == "fsq" else self.d_latent


def _stages(factor: int) -> list[int]:
    """Prime factors of ``factor``, smallest first: the strides of the down/up stages."""
    out, p = [], 2
    while factor > 1:
        while factor % p == 0:
            out.append(p)
            factor //= p
        p += 1
    return out


def _stride_conv_args(s: int) -> dict:
    # kernel = s + 2 p with padding p: output length exactly L / s (and L * s transposed).
    p = max(1, s // 2)
    return {"kernel_size": s + 2 * p, "stride": s, "padding": p}


class ResBlock(nn.Module):
    """x + conv(silu(conv(silu(x)))) on (B, W, L)."""

    def __init__(self, width: int):
        super().__init__()
        self.conv1 = nn.Conv1d(width, width, 3, padding=1)
        self.conv2 = nn.Conv1d(width, width, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


def _encoder(cfg: TokenizerConfig) -> nn.Sequential:
    W = cfg.width
    layers: list[nn.Module] = [nn.Conv1d(cfg.d_input, W, 3, padding=1)]
    for s in _stages(cfg.downsample):
        layers += [ResBlock(W) for _ in range(cfg.n_res)]
        layers.append(nn.Conv1d(W, W, **_stride_conv_args(s)))
    layers += [ResBlock(W) for _ in range(cfg.n_res)]
    layers += [nn.SiLU(), nn.Conv1d(W, cfg.latent_dim, 1)]
    return nn.Sequential(*layers)


def _decoder(cfg: TokenizerConfig) -> nn.Sequential:
    W = cfg.width
    layers: list[nn.Module] = [nn.Conv1d(cfg.latent_dim, W, 3, padding=1)]
    layers += [ResBlock(W) for _ in range(cfg.n_res)]
    for s in reversed(_stages(cfg.downsample)):
        layers.append(nn.ConvTranspose1d(W, W, **_stride_conv_args(s)))
        layers += [ResBlock(W) for _ in range(cfg.n_res)]
    layers += [nn.SiLU(), nn.Conv1d(W, cfg.d_input, 3, padding=1)]
    return nn.Sequential(*layers)


def _build_quantizer(cfg: TokenizerConfig) -> nn.Module:
    if cfg.quantizer == "fsq":
        return FSQ(cfg.levels)
    if cfg.quantizer == "gumbel":
        return GumbelQuantizer(cfg.d_latent, cfg.codebook_size, hard=cfg.gumbel_hard, tau_start=cfg.tau_start,
                               tau_min=cfg.tau_min, tau_anneal_steps=cfg.tau_anneal_steps, kl_weight=cfg.kl_weight)
    return VectorQuantizer(
        cfg.d_latent, cfg.codebook_size, codebook_dim=cfg.codebook_dim, distance=cfg.distance,
        codebook_update=cfg.codebook_update, decay=cfg.decay, commitment_weight=cfg.commitment_weight,
        kmeans_init=cfg.kmeans_init, dead_code_steps=cfg.dead_code_steps, rotation_trick=cfg.rotation_trick,
    )


class Tokenizer(nn.Module):
    """Conv encoder -> quantiser -> conv decoder. ``Tokenizer(config)`` or
    ``Tokenizer(quantizer="vq", codebook_size=256, ...)`` (options checked against
    :class:`TokenizerConfig`)."""

    def __init__(self, config: TokenizerConfig | None = None, **options):
        super().__init__()
        if config is None:
            config = config_from_dict(TokenizerConfig, options, context="Tokenizer")
        elif options:
            raise TypeError("Tokenizer: pass either a TokenizerConfig or options, not both")
        self.config = config
        self.downsample = config.downsample
        self.encoder = _encoder(config)
        self.quantizer = _build_quantizer(config)
        self.decoder = _decoder(config)
        self.register_buffer("input_mean", torch.zeros(config.d_input))
        self.register_buffer("input_std", torch.ones(config.d_input))

    @property
    def vocab_size(self) -> int:
        return self.quantizer.codebook_size

    # ------------------------------------------------------------------ data scale
    @torch.no_grad()
    def fit_normalizer(self, x: Tensor, lengths: Tensor | None = None) -> None:
        """Set the per-channel mean / std used to standardise inputs from a sample x (B, L, C)."""
        x = self._check_input(x)
        mask = self._mask(lengths, x.shape[0], x.shape[1], x.device)
        flat = x[mask] if mask is not None else x.reshape(-1, x.shape[-1])  # (n, C)
        self.input_mean.copy_(flat.mean(0))
        self.input_std.copy_(flat.std(0).clamp(min=1e-6))

    # ------------------------------------------------------------------ pieces
    def _check_input(self, x: Tensor) -> Tensor:
        C = self.config.d_input
        if x.dim() == 2 and C == 1:
            x = x[..., None]
        if x.dim() != 3 or x.shape[-1] != C:
            raise ValueError(f"Tokenizer expects signals (B, L, {C})" + (" or (B, L)" if C == 1 else "")
                             + f", got shape {tuple(x.shape)}")
        if not x.dtype.is_floating_point:
            raise ValueError(f"Tokenizer expects real-valued signals, got dtype {x.dtype}; "
                             "token ids do not need a tokenizer")
        return x.to(self.input_mean.dtype)

    @staticmethod
    def _mask(lengths: Tensor | None, B: int, L: int, device) -> Tensor | None:
        if lengths is None:
            return None
        lengths = torch.as_tensor(lengths, device=device)
        if lengths.shape != (B,):
            raise ValueError(f"lengths must have shape ({B},), got {tuple(lengths.shape)}")
        return torch.arange(L, device=device)[None, :] < lengths[:, None]  # (B, L)

    def _latent(self, x: Tensor, lengths: Tensor | None):
        """Standardise, pad and encode: x (B, L, C) -> z (B, L', d), mask (B, L'), x_std (B, L, C)."""
        x = self._check_input(x)
        B, L, _ = x.shape
        x_std = (x - self.input_mean) / self.input_std  # (B, L, C)
        mask = self._mask(lengths, B, L, x.device)
        if mask is not None:
            x_std = x_std.masked_fill(~mask[..., None], 0.0)
        f = self.downsample
        pad = (-L) % f
        h = rearrange(x_std, "b l c -> b c l")
        if pad:
            h = F.pad(h, (0, pad))
        z = rearrange(self.encoder(h), "b d l -> b l d")  # (B, L', d)
        zmask = None
        if lengths is not None:
            short = torch.div(torch.as_tensor(lengths, device=x.device) + f - 1, f, rounding_mode="floor")
            zmask = self._mask(short, B, z.shape[1], x.device)
        return z, zmask, x_std, mask

    def _reconstruct(self, q: Tensor) -> Tensor:
        """Quantised latents (B, L', d) -> standardised signal (B, L' * downsample, C)."""
        return rearrange(self.decoder(rearrange(q, "b l d -> b d l")), "b c l -> b l c")

    # ------------------------------------------------------------------ API
    def encode(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Signals (B, L, C) -> token ids (B, ceil(L / downsample)) int64; updates nothing."""
        z, _, _, _ = self._latent(x, lengths)
        return self.quantizer.encode(z)

    def decode(self, ids: Tensor, length: int | None = None) -> Tensor:
        """Token ids (B, L') -> signals (B, L' * downsample, C) in the input scale
        (cropped to ``length`` if given)."""
        if ids.dim() != 2:
            raise ValueError(f"ids must be (B, L'), got shape {tuple(ids.shape)}")
        y = self._reconstruct(self.quantizer.decode(ids)) * self.input_std + self.input_mean
        return y if length is None else y[:, :length]

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, dict]:
        """x (B, L, C) -> (recon (B, L, C) in the input scale, info). ``info["loss"]`` is
        reconstruction MSE (on standardised signals, real positions) + quantiser loss;
        also ``recon_mse``, ``quant_loss``, ``ids`` and the quantiser's stats."""
        z, zmask, x_std, mask = self._latent(x, lengths)
        qo = self.quantizer(z, zmask)
        y_std = self._reconstruct(qo.quantized)[:, : x_std.shape[1]]  # (B, L, C)
        recon_mse = masked_mse(y_std, x_std, mask)
        info = {"loss": recon_mse + qo.loss, "recon_mse": recon_mse.detach(),
                "quant_loss": qo.loss.detach(), "ids": qo.ids, **qo.stats}
        return y_std * self.input_std + self.input_mean, info

    def as_frontend(self) -> TokenizerFrontend:
        """A frozen copy (eval mode, no gradients) whose forward maps signals to ids, for
        ``seqzoo.build_model(..., vocab_size=tok.vocab_size, frontend=tok.as_frontend())``."""
        return TokenizerFrontend(self)

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path) -> Path:
        """Write ``path/tokenizer.safetensors`` (weights and buffers) and ``path/config.json``."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(path / WEIGHTS), metadata={"format": "pt", "seqzoo": "tokenizer"})
        (path / CONFIG).write_text(json.dumps(dataclasses.asdict(self.config), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> Tokenizer:
        """Inverse of :meth:`save`."""
        from safetensors.torch import load_file

        path = Path(path)
        for name in (WEIGHTS, CONFIG):
            if not (path / name).is_file():
                raise FileNotFoundError(f"{path / name} not found: Tokenizer.load expects a folder written by "
                                        "Tokenizer.save (tokenizer.safetensors + config.json)")
        options = json.loads((path / CONFIG).read_text())
        tok = cls(config_from_dict(TokenizerConfig, options, context=f"{path / CONFIG}"))
        tok.load_state_dict(load_file(str(path / WEIGHTS), device=str(map_location)))
        return tok.to(map_location)


class TokenizerFrontend(nn.Module):
    """Signals (B, L, C) or (B, L) -> token ids (B, ceil(L / downsample)), frozen.

    Holds a deep copy of the tokenizer with ``requires_grad=False`` and stays in eval mode
    whatever ``.train()`` is called with, so training the model around it never moves
    the codebook (no EMA, k-means or restarts) or the encoder.
    """

    def __init__(self, tokenizer: Tokenizer):
        super().__init__()
        self.tokenizer = copy.deepcopy(tokenizer).eval().requires_grad_(False)
        self.downsample = tokenizer.downsample
        self.vocab_size = tokenizer.vocab_size

    def train(self, mode: bool = True) -> TokenizerFrontend:
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        return self.tokenizer.encode(x)
