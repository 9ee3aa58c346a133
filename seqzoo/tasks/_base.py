"""What every task shares: its metadata (:class:`TaskInfo`), the batch collation
(:class:`Collate`) and the dataset base classes.

- :class:`TaskDataset`: a map-style ``torch.utils.data.Dataset`` over one split.
- :class:`CachedTask`: generated once (in parallel where it matters), saved under the data
  root, verified on every load (see :mod:`seqzoo.tasks._cache`).
- :class:`SyntheticTask`: a virtual dataset; item ``i`` is drawn from a generator seeded by
  ``(seed, split, i)``, so nothing is stored and a large ``size`` gives fresh samples at
  every step, as the original synthetic tasks do.
"""

from __future__ import annotations

import dataclasses
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from seqzoo.tasks import _cache
from seqzoo.tasks._cache import data_root, load_or_generate

__all__ = ["SPLITS", "TaskInfo", "Collate", "TaskDataset", "CachedTask", "SyntheticTask", "sample_rng", "pool_images",
           "check_pool", "EOS", "append_eos"]

SPLITS = ("train", "val", "test")
SPLIT_CODE = {"train": 0, "val": 1, "test": 2}  # mixed into seeds: splits never share a stream
IGNORE_INDEX = -100  # label of positions that are not scored (sequence targets), as in F.cross_entropy
EOS = "<eos>"  # the token ``append_eos`` adds, with the id after the task's own vocabulary


def sample_rng(seed: int, split: str, index: int, stream: int = 0) -> np.random.Generator:
    """The generator of sample ``index`` of ``split``: independent of every other sample."""
    return np.random.default_rng([int(seed), SPLIT_CODE[split], int(index), int(stream)])


@dataclass(frozen=True)
class TaskInfo:
    """Metadata of one split of a task: all a generic training loop needs.

    inputs     "tokens": items hold LongTensor ids (L,) in [0, vocab_size);
               "real": items hold FloatTensor (L, d_input)
    n_classes  width of the model's output: classes ("class"), vocabulary ("sequence": a
               prediction at every position), 1 ("regression")
    seq_len    the length no input of this split exceeds (ListOps: 2048, LRA's padded
               length); test splits of synthetic tasks are longer than train ones (length
               generalisation)
    target     "class": one int per item; "sequence": LongTensor (L,) of per-position
               targets, ``ignore_index`` where nothing is scored; "regression": one float
    metric     "accuracy" (over items, or over scored positions for "sequence") or "mse"
    is_pair    items are ((inputs_a, inputs_b), label): two documents, one shared encoder
    pad_id     token id that pads ragged batches (None: every input of the split has the
               same length, so batches never need padding); real inputs pad with 0.0
    """

    name: str
    inputs: Literal["tokens", "real"]
    n_classes: int
    seq_len: int
    target: Literal["class", "sequence", "regression"]
    metric: Literal["accuracy", "mse"]
    vocab_size: int | None = None
    d_input: int | None = None
    is_pair: bool = False
    pad_id: int | None = None
    ignore_index: int = IGNORE_INDEX
    description: str = ""

    def __post_init__(self):
        if (self.inputs == "tokens") != (self.vocab_size is not None) or (self.inputs == "real") != (self.d_input is not None):
            raise ValueError(f"task {self.name!r}: token tasks set vocab_size, real-valued tasks set d_input")

    @property
    def variable_length(self) -> bool:
        return self.pad_id is not None

    def model_options(self) -> dict[str, Any]:
        """The task-dependent options of :func:`seqzoo.build_model` (input width, head, classes)."""
        opts: dict[str, Any] = {"vocab_size": self.vocab_size} if self.inputs == "tokens" else {"d_input": self.d_input}
        if self.target == "sequence":
            if self.inputs != "tokens" or self.n_classes != self.vocab_size:
                raise ValueError(f"task {self.name!r}: per-position targets need an LM head over the vocabulary")
            opts["head"] = "lm"
        else:
            opts.update(head="classify", n_classes=self.n_classes, pair=self.is_pair)
        return opts


def _stack_padded(seqs: list[Tensor], pad_value: float | int | None, pad_to: int | None, what: str) -> Tensor:
    L = max(int(s.shape[0]) for s in seqs)
    if pad_to is not None:
        if pad_to < L:
            raise ValueError(f"collate: an item of length {L} does not fit pad_to={pad_to}")
        L = pad_to
    if all(s.shape[0] == L for s in seqs):
        return torch.stack(seqs)
    if pad_value is None:
        raise ValueError(f"collate: {what} of different lengths in a task without a pad_id; lengths "
                         f"{sorted({int(s.shape[0]) for s in seqs})}")
    out = seqs[0].new_full((len(seqs), L, *seqs[0].shape[1:]), pad_value)
    for i, s in enumerate(seqs):
        out[i, : s.shape[0]] = s
    return out


@dataclass(frozen=True)
class Collate:
    """Turns a list of items into ``(inputs, lengths, labels)``, the same for every task:

    - inputs (B, L) ids or (B, L, C) values, right-padded with ``pad_id`` / 0.0 to the
      longest item (or to ``pad_to``); pair tasks: ``(inputs_a, inputs_b)``
    - lengths (B,) LongTensor of real positions; pair tasks: ``(lengths_a, lengths_b)``
    - labels (B,) LongTensor (class), (B,) FloatTensor (regression) or (B, L) LongTensor
      padded with ``ignore_index`` (sequence)

    so a loop can call ``model(inputs, lengths=lengths)`` for any task. A plain picklable
    object, so DataLoader workers can use it under any start method.
    """

    pad_id: int | None = None
    ignore_index: int = IGNORE_INDEX
    pad_to: int | None = None
    real: bool = False

    def _side(self, seqs: list[Tensor]) -> tuple[Tensor, Tensor]:
        lengths = torch.tensor([int(s.shape[0]) for s in seqs], dtype=torch.long)
        pad = 0.0 if self.real else self.pad_id
        return _stack_padded(seqs, pad, self.pad_to, "inputs"), lengths

    def __call__(self, batch: list[tuple[Any, Any]]):
        if not batch:
            raise ValueError("collate: empty batch")
        xs, ys = zip(*batch)
        if isinstance(xs[0], (tuple, list)):
            (a, la), (b, lb) = self._side([x[0] for x in xs]), self._side([x[1] for x in xs])
            inputs, lengths = (a, b), (la, lb)
        else:
            inputs, lengths = self._side(list(xs))
        if isinstance(ys[0], Tensor) and ys[0].dim() == 1:
            labels = _stack_padded(list(ys), self.ignore_index, inputs.shape[1], "labels")
        elif isinstance(ys[0], float) or (isinstance(ys[0], Tensor) and ys[0].is_floating_point()):
            labels = torch.tensor([float(y) for y in ys], dtype=torch.float32)
        else:
            labels = torch.tensor([int(y) for y in ys], dtype=torch.long)
        return inputs, lengths, labels


class TaskDataset(Dataset):
    """One split of a task. ``ds[i] -> (inputs, label)``; ``ds.info`` is its
    :class:`TaskInfo`; ``ds.collate`` batches items; token tasks have ``ds.vocab``."""

    task_name: ClassVar[str] = ""
    Config: ClassVar[type]
    default_sizes: ClassVar[dict[str, int | None]] = {}
    vocab: list[str] | None = None

    def __init__(self, config: Any, split: str, size: int | None, *, root=None, workers=None, progress=True):
        if split not in SPLITS:
            raise ValueError(f"task {self.task_name!r}: unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise ValueError(f"task {self.task_name!r}: size must be a positive integer or None, got {size!r}")
        self.config = config
        self.split = split
        self.size = self.default_sizes.get(split) if size is None else size
        self.info = self.make_info(config, split)
        if getattr(config, "append_eos", False):
            self.vocab = [*type(self).vocab, EOS]
        self.pad_to: int | None = None  # set to info.seq_len to pad every batch to the full length (as LRA does)
        self._root = root
        self._workers = workers
        self._progress = progress

    @classmethod
    def make_info(cls, config: Any, split: str) -> TaskInfo:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def collate(self) -> Collate:
        return Collate(pad_id=self.info.pad_id, ignore_index=self.info.ignore_index, pad_to=self.pad_to,
                       real=self.info.inputs == "real")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(task={self.task_name!r}, split={self.split!r}, n={len(self)})"


class CachedTask(TaskDataset):
    """A task generated once and stored. Subclasses implement :meth:`generate` (arrays from
    config) and :meth:`item` (an item from ``self.arrays``), and bump ``version``
    whenever the generator's output changes (old caches then count as stale)."""

    version: ClassVar[int] = 1
    # Options added after a task shipped: left out of the cache key while at their default,
    # so existing caches stay valid (the data at the default are what they were).
    key_omit_defaults: ClassVar[tuple[str, ...]] = ("pool", "side")
    # Options applied when an item is read, not when the data are generated: never in the key.
    read_options: ClassVar[tuple[str, ...]] = ("append_eos",)

    def __init__(self, config, split, size, *, root=None, workers=None, progress=True, mmap=True):
        super().__init__(config, split, size, root=root, workers=workers, progress=progress)
        defaults = {f.name: f.default for f in dataclasses.fields(config)}
        config_key = {k: v for k, v in dataclasses.asdict(config).items()
                      if k not in self.read_options and not (k in self.key_omit_defaults and v == defaults.get(k))}
        key = {
            "task": self.task_name,
            "version": self.version,
            "config": config_key,
            "split": split,
            "size": self.size,
            **self.source_fingerprint(),
        }
        self.arrays, self.cache_dir = load_or_generate(
            data_root(root), self.task_name, split, self.size, key, self._generate, mmap=mmap
        )

    def __getstate__(self):
        # DataLoader workers started with "spawn" pickle the dataset: send the folder, not
        # the (memory-mapped) arrays, and map them again on the other side.
        state = self.__dict__.copy()
        state["arrays"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.arrays = _cache.load_arrays(self.cache_dir)

    def _generate(self) -> dict[str, np.ndarray]:
        return self.generate(self.config, self.split, self.size, workers=self._workers, progress=self._progress)

    def __getitem__(self, index: int):
        return self.item(_check_index(index, len(self), self))

    def item(self, index: int):  # pragma: no cover - abstract
        """Item ``index`` (0 <= index < len) from ``self.arrays``."""
        raise NotImplementedError

    def source_fingerprint(self) -> dict[str, Any]:
        """Extra entries of the cache key (e.g. a fingerprint of the files a task reads)."""
        return {}

    @classmethod
    def generate(cls, config, split: str, size: int | None, *, workers=None, progress=True) -> dict[str, np.ndarray]:
        raise NotImplementedError  # pragma: no cover

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in Path(self.cache_dir).iterdir())


class SyntheticTask(TaskDataset):
    """A virtual dataset: item ``i`` comes from :meth:`sample` with the generator
    :func:`sample_rng` ``(seed, split, epoch * size + i)``. Nothing is stored; ``size`` is the
    length of an epoch. ``set_epoch(e)`` (train split) moves to fresh samples, as the
    original synthetic tasks draw new data at every step; val and test never change."""

    def __init__(self, config, split, size, *, root=None, workers=None, progress=True):
        super().__init__(config, split, size, root=root, workers=workers, progress=progress)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        if self.split != "train" and epoch:
            raise ValueError(f"set_epoch: only the train split draws fresh samples ({self!r} is fixed)")
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int):
        index = _check_index(index, self.size, self)
        return self.sample(sample_rng(self.config.seed, self.split, self.epoch * self.size + index), self.split)

    def sample(self, rng: np.random.Generator, split: str):  # pragma: no cover - abstract
        raise NotImplementedError


def append_eos(ids: Tensor, eos_id: int, seq_len: int) -> Tensor:
    """ids (L,) -> (min(L, seq_len - 1) + 1,): the end-of-sequence token appended, the
    sequence first cut to seq_len - 1 so it still fits (S4's LRA loaders: ``l_max -
    append_eos`` tokens, then ``<eos>``)."""
    return torch.cat([ids[: seq_len - 1], ids.new_full((1,), eos_id)])


def _check_index(index, n: int, where) -> int:
    index = int(index)
    if not -n <= index < n:
        raise IndexError(f"index {index} out of range for {where!r} of length {n}")
    return index % n


def check_pool(pool: int, side: int) -> None:
    """``pool`` must be a positive divisor of the image side."""
    if isinstance(pool, bool) or not isinstance(pool, int) or pool < 1 or side % pool:
        divisors = [k for k in range(1, side + 1) if side % k == 0]
        raise ValueError(f"pool = {pool!r} must divide the image side {side}; valid: {', '.join(map(str, divisors))}")


def pool_images(images: np.ndarray, pool: int) -> np.ndarray:
    """Average-pool uint8 images (N, S, S) by ``pool`` per axis -> (N, S/pool, S/pool) uint8
    (rounded). ``pool=1`` returns the images unchanged. Smaller images give shorter
    sequences (L = (S/pool)^2) for quick runs; the task at pool=1 is the faithful one."""
    if pool == 1:
        return images
    N, S, _ = images.shape
    check_pool(pool, S)
    x = images.reshape(N, S // pool, pool, S // pool, pool).astype(np.float32).mean(axis=(2, 4))
    return np.round(x).astype(np.uint8)


def python_fingerprint() -> str:
    return f"{platform.python_implementation()}-{platform.python_version()}"
