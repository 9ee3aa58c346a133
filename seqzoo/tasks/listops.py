"""ListOps, exactly as the Long Range Arena generates it.

Paper: Tay et al., "Long Range Arena: A Benchmark for Efficient Transformers" (ICLR 2021),
§2.2.1, https://arxiv.org/abs/2011.04006; after Nangia & Bowman, "ListOps" (2018).

A sample is a random expression tree printed in prefix form, e.g.
``[MAX 4 3 [MIN 2 3 ] 1 0 [MED 1 5 8 9 2 ] ]`` -> 5. The generator follows LRA's
``generate_tree``:

- below depth ``max_depth`` (10) a node is an operator with probability 0.25, otherwise
  (and always at depth 10) a digit drawn uniformly from 0-9;
- an operator draws ``randint(2, max_args)`` (2-10) children, then its operator uniformly
  from MIN, MAX, MED (median, ``int(np.median)``: the floor of the mean of the middle two
  for an even count) and SM (sum mod 10);
- a tree is kept if ``min_length < tokens < max_length`` (500 < n < 2000), counting
  operators, digits and closing brackets (LRA's readers drop the parentheses);
- duplicates are removed (within a split; a collision between splits of trees with over
  500 tokens has probability below 1e-100, and the tests check the generated splits).

Tokens: 15 symbols plus padding, ``vocab = ["<pad>", "0", ..., "9", "[MIN", "[MAX",
"[MED", "[SM", "]"]``; 10 classes; inputs are padded to 2048 (``info.seq_len``).
``append_eos=True`` ends every expression with a 17th token ``"<eos>"`` (S4's ListOps loader
appends one; read-time only, the cached data are the same).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

import numpy as np
import torch

from seqzoo.tasks._base import CachedTask, TaskInfo, append_eos
from seqzoo.tasks._parallel import run_shards
from seqzoo.tasks._registry import register_task

__all__ = ["ListOpsConfig", "ListOps", "VOCAB", "evaluate", "to_string", "generate_tree"]

VOCAB = ["<pad>", *[str(d) for d in range(10)], "[MIN", "[MAX", "[MED", "[SM", "]"]
PAD = 0
MIN, MAX, MED, SM, END = 11, 12, 13, 14, 15
OPERATORS = (MIN, MAX, MED, SM)
OP_PROB = 0.25  # LRA's VALUE_P: a node below max_depth is an operator when random() <= 0.25
_TOKEN_ID = {s: i for i, s in enumerate(VOCAB)}
_SHARD = 250  # kept trees per shard (fixed: shards, not workers, set the random streams)


def _apply(op: int, args: list[int]) -> int:
    if op == MIN:
        return min(args)
    if op == MAX:
        return max(args)
    if op == SM:
        return sum(args) % 10
    s = sorted(args)  # MED: int(np.median(args)); all args are >= 0 so int() is the floor
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) // 2


# ---------------------------------------------------------------------------- evaluation
def evaluate(tokens) -> int:
    """The value of an expression given as token ids (ints, a tensor) or strings.

    Padding ids / ``"<pad>"`` and LRA's parentheses ``"("`` ``")"`` are skipped. A malformed
    expression raises ``ValueError`` saying where it went wrong.
    """
    if isinstance(tokens, str):
        tokens = tokens.split()
    if isinstance(tokens, (torch.Tensor, np.ndarray)):
        tokens = tokens.tolist()
    stack: list[list[int]] = [[]]  # frames: [op, arg, arg, ...]; the bottom one holds the result
    for pos, tok in enumerate(tokens):
        if isinstance(tok, str):
            if tok in ("(", ")"):
                continue
            if tok not in _TOKEN_ID:
                raise ValueError(f"ListOps token {tok!r} at position {pos} is not in the vocabulary {VOCAB}")
            tok = _TOKEN_ID[tok]
        tok = int(tok)
        if tok == PAD:
            continue
        if 1 <= tok <= 10:
            stack[-1].append(tok - 1)
        elif tok in OPERATORS:
            stack.append([tok])
        elif tok == END:
            if len(stack) == 1:
                raise ValueError(f"unmatched ']' at position {pos}")
            op, *args = stack.pop()
            if not args:
                raise ValueError(f"operator {VOCAB[op]} closed without arguments at position {pos}")
            stack[-1].append(_apply(op, args))
        else:
            raise ValueError(f"token id {tok} at position {pos} is outside the vocabulary [0, {len(VOCAB)})")
    if len(stack) != 1:
        raise ValueError(f"{len(stack) - 1} operator(s) left open at the end of the expression")
    if len(stack[0]) != 1:
        raise ValueError(f"an expression must have exactly one top-level value, found {len(stack[0])}")
    return stack[0][0]


def to_string(tokens, parens: bool = False) -> str:
    """Token ids -> ``"[MAX 2 9 ]"`` (pads dropped); ``parens=True`` wraps every operator
    application in ``( )`` as LRA's TSV files do."""
    if isinstance(tokens, (torch.Tensor, np.ndarray)):
        tokens = tokens.tolist()
    words = [VOCAB[int(t)] for t in tokens if int(t) != PAD]
    if not parens:
        return " ".join(words)
    return " ".join(f"( {w}" if w.startswith("[") else (f"{w} )" if w == "]" else w) for w in words)


# ---------------------------------------------------------------------------- generation
class _TooLong(Exception):
    pass


def _operator(rand, depth: int, max_depth: int, max_args: int, out: list[int], limit: int) -> int:
    """Append the tokens of an operator node at ``depth`` to ``out``; return its value.

    Children that are digits are drawn inline (no call per leaf): this loop is the whole
    cost of generating ListOps. Raises _TooLong once ``out`` reaches ``limit`` tokens (such
    a tree would be rejected anyway, and stopping early does not change the distribution
    of the kept ones). ``int(rand() * k)`` is ``randrange(k)`` up to a 2**-53 bias.
    """
    n_args = 2 + int(rand() * (max_args - 1))  # randint(2, max_args)
    at = len(out)
    out.append(PAD)  # the operator is drawn after its children, as in LRA
    args = []
    deeper = depth + 1 < max_depth  # at max_depth a node is always a digit
    for _ in range(n_args):
        if deeper and rand() <= OP_PROB:
            args.append(_operator(rand, depth + 1, max_depth, max_args, out, limit))
        else:
            v = int(rand() * 10)
            out.append(v + 1)
            args.append(v)
    op = OPERATORS[int(rand() * 4)]
    out[at] = op
    out.append(END)
    if len(out) >= limit:
        raise _TooLong
    return _apply(op, args)


def generate_tree(rng: random.Random, max_depth: int = 10, max_args: int = 10, max_length: int = 2000):
    """One LRA tree (root at depth 1): ``(token ids, value)``, or None if it reached
    ``max_length`` tokens."""
    rand = rng.random
    if not (1 < max_depth and rand() <= OP_PROB):
        v = int(rand() * 10)
        return [v + 1], v
    out: list[int] = []
    try:
        value = _operator(rand, 1, max_depth, max_args, out, max_length)
    except _TooLong:
        return None
    return out, value


def _shard_seed(seed: int, split: str, shard: int) -> int:
    h = hashlib.sha256(f"listops/{seed}/{split}/{shard}".encode()).digest()
    return int.from_bytes(h[:8], "little")


def _gen_shard(seed: int, split: str, shard: int, n: int, cfg: dict) -> tuple[list[bytes], list[int], int]:
    """``n`` accepted trees of one shard: (token bytes, labels, trees tried)."""
    rng = random.Random(_shard_seed(seed, split, shard))
    seqs, labels, tried = [], [], 0
    while len(seqs) < n:
        tried += 1
        t = generate_tree(rng, cfg["max_depth"], cfg["max_args"], cfg["max_length"])
        if t is not None and cfg["min_length"] < len(t[0]) < cfg["max_length"]:
            seqs.append(bytes(t[0]))
            labels.append(t[1])
    return seqs, labels, tried


@dataclass
class ListOpsConfig:
    seed: int = 0
    min_length: int = 500  # keep trees with min_length < tokens < max_length (LRA: 500, 2000)
    max_length: int = 2000
    max_depth: int = 10
    max_args: int = 10
    seq_len: int = 2048  # length inputs are padded to (LRA: 2048)
    append_eos: bool = False  # end every expression with "<eos>" (id 16), as S4's loader does

    def __post_init__(self):
        if not 0 <= self.min_length < self.max_length - 1:
            raise ValueError(f"need 0 <= min_length < max_length - 1, got {self.min_length}, {self.max_length}")
        longest = self.max_length - 1 + self.append_eos
        if longest > self.seq_len:
            raise ValueError(f"seq_len={self.seq_len} must be >= {longest}, the longest expression"
                             + (" plus <eos>" if self.append_eos else ""))
        if self.max_depth < 2 or self.max_args < 2:
            raise ValueError("max_depth and max_args must be >= 2")


@register_task("listops", config=ListOpsConfig)
class ListOps(CachedTask):
    """ListOps (LRA): token ids (L,) with 500 < L < 2000, label = the expression's value."""

    default_sizes = {"train": 96_000, "val": 2_000, "test": 2_000}
    vocab = VOCAB
    version = 1

    @classmethod
    def make_info(cls, config: ListOpsConfig, split: str) -> TaskInfo:
        return TaskInfo(
            name="listops", inputs="tokens", vocab_size=len(VOCAB) + config.append_eos, n_classes=10,
            seq_len=config.seq_len,
            target="class", metric="accuracy", pad_id=PAD,
            description="value (0-9) of a nested MIN/MAX/MED/SM expression in prefix form",
        )

    @classmethod
    def generate(cls, config: ListOpsConfig, split, size, *, workers=None, progress=True):
        cfg = {k: getattr(config, k) for k in ("min_length", "max_length", "max_depth", "max_args")}
        seqs: list[bytes] = []
        labels: list[int] = []
        seen: set[bytes] = set()
        tried = 0
        next_shard = 0
        while len(seqs) < size:  # a second round only if duplicates were dropped
            need = size - len(seqs)
            shards = [(config.seed, split, next_shard + i, min(_SHARD, need - i * _SHARD), cfg)
                      for i in range(-(-need // _SHARD))]
            next_shard += len(shards)
            results = run_shards(_gen_shard, shards, workers=workers, desc=f"listops {split}", progress=progress,
                                 total=need, advance=lambda r: len(r[0]))
            for s, l, t in results:
                tried += t
                for seq, lab in zip(s, l):
                    if seq not in seen and len(seqs) < size:
                        seen.add(seq)
                        seqs.append(seq)
                        labels.append(lab)
        lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
        offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return {
            "tokens": np.frombuffer(b"".join(seqs), dtype=np.uint8).copy(),
            "offsets": offsets,
            "labels": np.asarray(labels, dtype=np.uint8),
            "tried": np.asarray([tried], dtype=np.int64),  # trees drawn to keep `size` (acceptance rate)
        }

    def __len__(self) -> int:
        return len(self.arrays["labels"])

    def item(self, index: int):
        o = self.arrays["offsets"]
        ids = torch.from_numpy(np.asarray(self.arrays["tokens"][o[index]: o[index + 1]], dtype=np.int64))
        if self.config.append_eos:
            ids = append_eos(ids, len(VOCAB), self.info.seq_len)
        return ids, int(self.arrays["labels"][index])
