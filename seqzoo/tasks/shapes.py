"""Shapes: a procedural 10-class set of 32x32 grey images, classified pixel by pixel.

The larger companion of the ``image`` task (LRA Image is CIFAR-10 at 32x32 -> L=1024; no
CIFAR ships offline). Ten shapes that stay distinct under rotation: disk, ring, square,
hollow square, triangle, hollow triangle, plus, five-pointed star, crescent, two bars. Each
image draws one shape with a random size (radius 6-12 px), position, rotation, background
and foreground grey level (contrast at least 0.25), anti-aliased (2x2 supersampling),
plus Gaussian pixel noise (``noise``). Items are pixels scaled to [-1, 1], row-major,
shape (1024, 1); classes are balanced exactly in every block of 10 items. ``pool`` (default
1) average-pools the drawn 32x32 images by that factor (2 -> 16x16, L=256) for quick runs.

What it measures: recognising a 2-D shape from a 1-D scan, with any amount of data (the
default 45k/5k/10k mirrors CIFAR's split sizes). The labels are exact by construction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from seqzoo.tasks._base import CachedTask, TaskInfo, check_pool, pool_images, sample_rng
from seqzoo.tasks._parallel import run_shards, shard_ranges
from seqzoo.tasks._registry import register_task

__all__ = ["ShapesConfig", "Shapes", "CLASSES", "draw_shapes"]

CLASSES = ["disk", "ring", "square", "hollow_square", "triangle", "hollow_triangle", "plus", "star", "crescent",
           "bars"]
SIZE = 32
_SS = 2  # supersampling per axis


def _inside(kind: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Shape ``kind`` in coordinates scaled so that it fits the unit disc."""
    r2 = u * u + v * v
    if kind in (0, 1):  # disk, ring
        return (r2 < 1.0) & (r2 > (0.55**2 if kind == 1 else -1.0))
    if kind in (2, 3):  # square, hollow square
        m = np.maximum(np.abs(u), np.abs(v))
        return (m < 0.72) & (m > (0.42 if kind == 3 else -1.0))
    if kind in (4, 5):  # triangle (circumradius 1), hollow triangle
        m = np.max([u * math.cos(a) + v * math.sin(a) for a in (math.pi / 2, math.pi * 7 / 6, math.pi * 11 / 6)],
                   axis=0)
        return (m < 0.5) & (m > (0.2 if kind == 5 else -9.0))
    if kind == 6:  # plus
        au, av = np.abs(u), np.abs(v)
        return ((au < 0.25) & (av < 0.95)) | ((av < 0.25) & (au < 0.95))
    if kind == 7:  # star: radius between 0.45 (valleys) and 1 (tips)
        phi = np.arctan2(v, u) % (2 * math.pi / 5)
        tri = np.abs(phi / (2 * math.pi / 5) * 2 - 1)  # 1 at a tip, 0 halfway between tips
        return np.sqrt(r2) < 0.45 + 0.55 * tri
    if kind == 8:  # crescent
        return (r2 < 1.0) & ((u - 0.45) ** 2 + v * v > 0.75**2)
    if kind == 9:  # two bars
        return ((np.abs(v - 0.45) < 0.2) | (np.abs(v + 0.45) < 0.2)) & (np.abs(u) < 0.9)
    raise ValueError(f"unknown shape kind {kind}")


def draw_shapes(labels: np.ndarray, params: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """uint8 images (N, 32, 32) of the shapes ``labels`` with ``params`` (N, 6): centre x, y
    (px), radius (px), rotation, background and foreground grey in [0, 1]; ``noise`` (N, 32, 32)
    is added before quantisation."""
    N = len(labels)
    c = (np.arange(SIZE * _SS) + 0.5) / _SS  # sub-pixel centres
    cx, cy, rad, rot, bg, fg = (params[:, k, None, None] for k in range(6))
    dx, dy = c[None, None, :] - cx, c[None, :, None] - cy  # (N, 64, 64)
    cos, sin = np.cos(rot), np.sin(rot)
    u, v = (dx * cos + dy * sin) / rad, (-dx * sin + dy * cos) / rad
    cover = np.zeros((N, SIZE * _SS, SIZE * _SS))
    for k in np.unique(labels).tolist():
        i = np.flatnonzero(labels == k)
        cover[i] = _inside(k, u[i], v[i])
    cover = cover.reshape(N, SIZE, _SS, SIZE, _SS).mean(axis=(2, 4))  # anti-aliasing
    img = bg + (fg - bg) * cover + noise
    return np.round(np.clip(img, 0.0, 1.0) * 255).astype(np.uint8)


def _gen_shard(seed: int, split: str, start: int, count: int, noise: float):
    idx = range(start, start + count)
    labels = np.array([sample_rng(seed, split, i // 10, stream=1).permutation(10)[i % 10] for i in idx])
    params, noises = [], []
    for i in idx:
        rng = sample_rng(seed, split, i)
        rad = rng.uniform(6.0, 12.0)
        cx, cy = rng.uniform(rad + 1, SIZE - rad - 1, 2)
        bg = rng.uniform(0.0, 0.5)
        fg = bg + rng.uniform(0.25, 0.5) if rng.random() < 0.5 else bg - rng.uniform(0.25, 0.5)
        if fg < 0:  # keep the contrast: flip to the other side
            fg = bg + (bg - fg)
        params.append((cx, cy, rad, rng.uniform(0, 2 * math.pi), bg, min(fg, 1.0)))
        noises.append(rng.normal(0.0, noise, (SIZE, SIZE)))
    images = draw_shapes(labels, np.array(params), np.array(noises))
    return images, labels.astype(np.uint8)


@dataclass
class ShapesConfig:
    seed: int = 0
    noise: float = 0.08  # std of the Gaussian pixel noise (grey levels in [0, 1])
    pool: int = 1  # average-pool the 32x32 images by this factor (L = (32 / pool)^2)

    def __post_init__(self):
        if self.noise < 0:
            raise ValueError(f"noise must be >= 0, got {self.noise}")
        check_pool(self.pool, SIZE)


@register_task("shapes", config=ShapesConfig)
class Shapes(CachedTask):
    """Procedural 32x32 shapes, 10 classes: pixels (1024, 1) in [-1, 1]."""

    default_sizes = {"train": 45_000, "val": 5_000, "test": 10_000}
    version = 1
    shard_size = 1000

    @classmethod
    def make_info(cls, config: ShapesConfig, split: str) -> TaskInfo:
        side = SIZE // config.pool
        return TaskInfo(name="shapes", inputs="real", d_input=1, n_classes=10, seq_len=side * side, target="class",
                        metric="accuracy", description="which of 10 shapes (32x32, random pose and contrast), pixel by pixel")

    @classmethod
    def generate(cls, config: ShapesConfig, split, size, *, workers=None, progress=True):
        shards = [(config.seed, split, s, n, config.noise) for s, n in shard_ranges(size, cls.shard_size)]
        out = run_shards(_gen_shard, shards, workers=workers, desc=f"shapes {split}", progress=progress, total=size,
                         advance=lambda r: len(r[1]))
        return {"images": pool_images(np.concatenate([o[0] for o in out]), config.pool),
                "labels": np.concatenate([o[1] for o in out])}

    def __len__(self) -> int:
        return len(self.arrays["labels"])

    def item(self, index: int):
        img = torch.from_numpy(np.asarray(self.arrays["images"][index], dtype=np.float32))
        return img.reshape(-1, 1) / 127.5 - 1.0, int(self.arrays["labels"][index])  # (side², 1)
