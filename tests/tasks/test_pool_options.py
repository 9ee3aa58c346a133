"""The image tasks' size options for quick runs: ``pool`` (average-pool the rendered image)
on image, shapes, pathfinder and pathx, and ``side`` (Pathfinder's canvas). The defaults
(pool=1, the preset side) keep the tasks as described."""

from __future__ import annotations

import numpy as np
import pytest

import seqzoo.tasks as tasks
from seqzoo.config import ConfigError
from seqzoo.tasks._base import pool_images


def test_pool_images_is_a_block_mean():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (3, 8, 8)).astype(np.uint8)
    y = pool_images(x, 4)
    assert y.shape == (3, 2, 2) and y.dtype == np.uint8
    for n in range(3):
        for i in range(2):
            for j in range(2):
                assert y[n, i, j] == round(float(x[n, 4 * i: 4 * i + 4, 4 * j: 4 * j + 4].astype(float).mean()))
    assert pool_images(x, 1) is x
    with pytest.raises(ValueError, match="pool = 3 must divide the image side 8; valid: 1, 2, 4, 8"):
        pool_images(x, 3)


@pytest.mark.parametrize("task, size", [("image", None), ("shapes", 20)])
def test_pool_option_shortens_the_sequence(task, size, root):
    pytest.importorskip("sklearn")
    full = tasks.build(task, split="val", size=size, root=root, progress=False)
    small = tasks.build(task, split="val", size=size, root=root, progress=False, pool=4)
    assert full.info.seq_len == 1024 and small.info.seq_len == 64
    assert tasks.task_info(task, "val", pool=4).seq_len == 64
    assert len(full) == len(small)
    for i in (0, len(full) - 1):
        (_, yf), (xs, ys) = full[i], small[i]
        assert yf == ys and xs.shape == (64, 1)
        img = np.asarray(full.arrays["images"][i])
        assert np.array_equal(np.asarray(small.arrays["images"][i]), pool_images(img[None], 4)[0])
    # pool=1 is the default: the same data and the same cache folder as before the option existed
    assert tasks.build(task, split="val", size=size, root=root, progress=False, pool=1).cache_dir == full.cache_dir
    assert "pool" not in full.cache_dir.joinpath("meta.json").read_text()
    with pytest.raises(ConfigError, match="valid: 1, 2, 4, 8, 16, 32"):
        tasks.build(task, split="val", root=root, pool=5)


def test_pathfinder_side_and_pool(root):
    ds = tasks.build("pathfinder", split="val", size=8, root=root, progress=False, side=16, n_dashes=2,
                     n_distractors=1, seed_distance=5.0)
    assert ds.info.seq_len == 256 and ds[0][0].shape == (256, 1)
    assert sorted(int(ds[i][1]) for i in range(8)) == [0] * 4 + [1] * 4  # balance is kept
    pooled = tasks.build("pathfinder", split="val", size=8, root=root, progress=False, side=16, n_dashes=2,
                         n_distractors=1, seed_distance=5.0, pool=2)
    assert pooled.info.seq_len == 64
    assert np.array_equal(np.asarray(pooled.arrays["images"]), pool_images(np.asarray(ds.arrays["images"]), 2))
    assert tasks.task_info("pathx", "val", pool=8).seq_len == 256
    assert tasks.task_info("pathfinder").seq_len == 1024 and tasks.task_info("pathx").seq_len == 16384  # defaults
    with pytest.raises(ValueError, match="pool = 3 must divide the image side 16"):
        tasks.task_info("pathfinder", side=16, pool=3)
