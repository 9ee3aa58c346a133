"""Quantisers and a tokenizer front end: signals -> token ids that any seqzoo model can embed.

    from seqzoo.quant import FSQ, VectorQuantizer, Tokenizer, TokenizerConfig
    out = VectorQuantizer(64, 512, rotation_trick=True)(z)   # z (B, L, 64) -> QuantizerOutput
    out = FSQ(levels=(8, 5, 5, 5))(z)                        # z (B, L, 4)
    out = GumbelQuantizer(64, 512, hard=True)(z)             # z (B, L, 64), Gumbel-softmax
    tok = Tokenizer(TokenizerConfig(quantizer="vq", downsample=4))

Training from the command line: ``python -m seqzoo.quant.train train --help``.
"""

from seqzoo.quant.fsq import FSQ, QuantizerOutput
from seqzoo.quant.gumbel import GumbelQuantizer, gumbel_softmax, kl_to_uniform
from seqzoo.quant.metrics import CodebookUsage, code_histogram, masked_mse, perplexity, relative_mse
from seqzoo.quant.tokenizer import Tokenizer, TokenizerConfig, TokenizerFrontend
from seqzoo.quant.vq import VectorQuantizer, kmeans, rotation_trick

__all__ = [
    "FSQ",
    "CodebookUsage",
    "GumbelQuantizer",
    "QuantizerOutput",
    "Tokenizer",
    "TokenizerConfig",
    "TokenizerFrontend",
    "VectorQuantizer",
    "code_histogram",
    "gumbel_softmax",
    "kl_to_uniform",
    "kmeans",
    "masked_mse",
    "perplexity",
    "relative_mse",
    "rotation_trick",
]
