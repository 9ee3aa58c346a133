"""Image: sequential classification of handwritten digits, pixel by pixel.

Paper (the original task): Tay et al., "Long Range Arena" (ICLR 2021), §2.2.4: CIFAR-10 in
grayscale, flattened row-major to L=1024, 10 classes. CIFAR-10 cannot be downloaded here;
the real images that ship inside an installed package are scikit-learn's digits (UCI
optical digits, 1,797 images of 8x8 with 17 grey levels, bundled in the wheel).

- Each image is upsampled bilinearly to 32x32 (L=1024, as in LRA Image), stored as uint8;
  items are pixels scaled to [-1, 1], row-major, shape (1024, 1).
- Splits are stratified per class, 80/10/10 (1,438 / 179 / 180 images).
- ``pool`` (default 1) average-pools the 32x32 images by that factor (4 -> 8x8, L=64):
  shorter sequences for quick runs; pool=1 is the task as described.

What it measures: integrating a 2-D shape seen as a 1-D sequence of 1,024 values, where
the pixels of one stroke lie 32 steps apart. It is small and easy (a linear model on the
pixels scores about 95%), a sanity check that a model learns from pixel sequences at all,
not a CIFAR substitute; the ``shapes`` task is the larger procedural set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from seqzoo.tasks._base import SPLIT_CODE, CachedTask, TaskInfo, check_pool, pool_images
from seqzoo.tasks._registry import register_task

__all__ = ["ImageConfig", "Image", "load_digits_32"]


@dataclass
class ImageConfig:
    seed: int = 0  # the stratified split
    pool: int = 1  # average-pool the 32x32 images by this factor (L = (32 / pool)^2)

    def __post_init__(self):
        check_pool(self.pool, 32)


def load_digits_32() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits upsampled to 32x32: uint8 images (N, 32, 32) and labels (N,)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the 'image' task reads scikit-learn's bundled digits: pip install scikit-learn "
                          "(in seqzoo's 'bench' and 'dev' extras)") from e
    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]  # (N, 1, 8, 8) in [0, 1]
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy(), d.target.astype(np.uint8)


def split_indices(labels: np.ndarray, split: str, seed: int) -> np.ndarray:
    """Indices of one split: per class, a seeded shuffle cut 80/10/10."""
    rng = np.random.default_rng([seed, 303])
    out = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_train, n_val = int(round(0.8 * len(idx))), int(round(0.1 * len(idx)))
        part = {"train": idx[:n_train], "val": idx[n_train: n_train + n_val], "test": idx[n_train + n_val:]}[split]
        out.append(part)
    return np.sort(np.concatenate(out))


@register_task("image", config=ImageConfig)
class Image(CachedTask):
    """scikit-learn digits upsampled to 32x32: pixels (1024, 1) in [-1, 1], 10 classes."""

    default_sizes = {"train": None, "val": None, "test": None}  # None: the whole split
    version = 1

    @classmethod
    def make_info(cls, config: ImageConfig, split: str) -> TaskInfo:
        side = 32 // config.pool
        return TaskInfo(name="image", inputs="real", d_input=1, n_classes=10, seq_len=side * side, target="class",
                        metric="accuracy", description="handwritten digit (sklearn digits at 32x32), pixel by pixel")

    @classmethod
    def generate(cls, config: ImageConfig, split, size, *, workers=None, progress=True):
        images, labels = load_digits_32()
        idx = split_indices(labels, split, config.seed)
        if size is not None:
            if size > len(idx):
                raise ValueError(f"image {split} split has {len(idx)} images; size={size} is too large")
            idx = np.sort(np.random.default_rng([config.seed, SPLIT_CODE[split], 304]).permutation(idx)[:size])
        return {"images": pool_images(images[idx], config.pool), "labels": labels[idx],
                "source_index": idx.astype(np.int32)}

    def __len__(self) -> int:
        return len(self.arrays["labels"])

    def item(self, index: int):
        img = torch.from_numpy(np.asarray(self.arrays["images"][index], dtype=np.float32))
        return img.reshape(-1, 1) / 127.5 - 1.0, int(self.arrays["labels"][index])  # (side², 1)
