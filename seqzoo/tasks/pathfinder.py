"""Pathfinder (32x32 -> L=1024) and Path-X (128x128 -> L=16384): are two markers joined
by a dashed path?

Papers: Linsley et al., "Learning long-range spatial dependencies with horizontal gated
recurrent units" (NeurIPS 2018), https://arxiv.org/abs/1805.08315 (the Pathfinder task);
Tay et al., "Long Range Arena" (ICLR 2021), §2.2.5-2.2.6 (Pathfinder at 32x32, Path-X at
128x128, pixels as a sequence).

A procedural generator in the spirit of ``snakes2`` (not a port of it). Each image holds
two long dashed paths A and B, short distractor paths, and two circular markers:

1. A starts at a uniform point; B starts ``seed_distance`` away from A's start. A path
   grows dash by dash: the next dash starts ``dash_gap`` beyond the end of the previous one,
   turned by one of ``n_candidates`` angles spread over [-π/(2c), π/(2c)] (c =
   ``continuity``: larger is smoother) with weight cos²(c·dθ), among the turns whose dash
   keeps ``margin`` pixels of clearance from every other stroke, marker disc and the image
   border (consecutive dashes touch by construction). Turns with no room for one more dash
   straight ahead get 1/20 of their weight, which steers paths away from dead ends. A main
   path that runs out of room starts over; a distractor stops short.
2. Marker discs are reserved at all four ends of A and B before the distractors are drawn,
   so the whole geometry is drawn without knowing the label.
3. The label only chooses where the second marker goes. One of A and B, drawn at random
   (the reference), gets a marker at its start; the other marker sits at the reference's
   end (label 1: joined) or at the other path's end (label 0: not joined). B starts next
   to A and either path is the reference half the time, so the markers' distance and the
   pixel statistics are the same for both classes (A, grown first on an empty canvas,
   ends further from its start than B: a fixed reference made the distance a cue, which a
   test now checks); only following a path tells the classes apart.
4. Strokes are anti-aliased capsules of width ``width``; images are uint8, and items are
   pixels scaled to [-1, 1], row-major, shape (size², 1).

Labels are balanced exactly: items 2k and 2k+1 get opposite labels (which one is 1 is drawn
per pair). Item i is drawn from a generator seeded by (seed, split, i), so any number of
worker processes gives the same images, and a smaller ``size`` is a prefix of a larger one.

Presets (``difficulty``): "easy" has short paths and few distractors, "hard" long paths and
more distractors (the LRA/S4 setting uses hard). Every preset field can be overridden.
``pool`` (default 1) average-pools the rendered images by that factor (L = (size/pool)²),
for quick runs on short sequences; pool=1 is the task as described.

Example grid for the docs::

    python -m seqzoo.tasks.pathfinder --grid docs/img/pathfinder_grid.png
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import torch

from seqzoo.tasks._base import CachedTask, TaskInfo, check_pool, pool_images, sample_rng
from seqzoo.tasks._parallel import run_shards, shard_ranges
from seqzoo.tasks._registry import register_task

__all__ = [
    "Style", "PRESETS", "PathSample", "make_sample", "make_samples", "render", "render_fast", "seg_distance",
    "PathfinderConfig", "PathXConfig", "Pathfinder", "PathX", "save_grid",
]


@dataclass(frozen=True)
class Style:
    """Geometry of one family of images (lengths in pixels, angles in radians)."""

    size: int  # image side
    dash_len: float  # length of one dash ("paddle")
    dash_gap: float  # gap between consecutive dashes of one path
    width: float  # stroke width
    margin: float  # clearance between strokes that are not consecutive dashes of one path
    n_dashes: int  # dashes per path (contour length)
    continuity: float  # turning weight cos²(continuity·dθ); max turn per dash π/(2·continuity)
    n_distractors: int  # distractor paths
    distractor_dashes: int  # dashes per distractor path
    marker_radius: float
    seed_distance: float  # distance between the starts of paths A and B
    border: float = 1.0  # strokes keep this far from the image edge
    n_candidates: int = 12  # turning angles tried per dash
    tries: int = 40  # attempts at a free start point; restarts of path B before starting over


PRESETS: dict[tuple[str, str], Style] = {
    ("pathfinder", "easy"): Style(size=32, dash_len=2.0, dash_gap=1.2, width=1.0, margin=1.0, n_dashes=6,
                                  continuity=1.0, n_distractors=4, distractor_dashes=3, marker_radius=1.5,
                                  seed_distance=7.0),
    ("pathfinder", "hard"): Style(size=32, dash_len=2.0, dash_gap=1.2, width=1.0, margin=1.0, n_dashes=14,
                                  continuity=1.0, n_distractors=6, distractor_dashes=4, marker_radius=1.5,
                                  seed_distance=7.0),
    ("pathx", "easy"): Style(size=128, dash_len=5.0, dash_gap=3.0, width=2.0, margin=2.5, n_dashes=10,
                             continuity=1.8, n_distractors=10, distractor_dashes=4, marker_radius=3.0,
                             seed_distance=20.0, border=2.0),
    ("pathx", "hard"): Style(size=128, dash_len=5.0, dash_gap=3.0, width=2.0, margin=2.5, n_dashes=20,
                             continuity=1.8, n_distractors=20, distractor_dashes=5, marker_radius=3.0,
                             seed_distance=20.0, border=2.0),
}


# ---------------------------------------------------------------------------- geometry
def _pseg2(px, py, ax, ay, bx, by):
    """Squared distance from points p to segments a-b (broadcast over x and y arrays)."""
    dx, dy = bx - ax, by - ay
    t = ((px - ax) * dx + (py - ay) * dy) / np.maximum(dx * dx + dy * dy, 1e-12)
    t = np.minimum(np.maximum(t, 0.0), 1.0)
    qx, qy = ax + t * dx - px, ay + t * dy - py
    return qx * qx + qy * qy


def seg_distance(p0, p1, q0, q1) -> np.ndarray:
    """Distance between segments [p0, p1] and [q0, q1], given as (..., 2) arrays of (x, y)
    (broadcast; a point is a segment with equal ends). 0 where they cross."""
    (p0x, p0y), (p1x, p1y), (q0x, q0y), (q1x, q1y) = (np.moveaxis(np.asarray(v, dtype=float), -1, 0)
                                                      for v in (p0, p1, q0, q1))
    d = np.minimum(np.minimum(_pseg2(p0x, p0y, q0x, q0y, q1x, q1y), _pseg2(p1x, p1y, q0x, q0y, q1x, q1y)),
                   np.minimum(_pseg2(q0x, q0y, p0x, p0y, p1x, p1y), _pseg2(q1x, q1y, p0x, p0y, p1x, p1y)))
    ux, uy, vx, vy = p1x - p0x, p1y - p0y, q1x - q0x, q1y - q0y
    o1 = ux * (q0y - p0y) - uy * (q0x - p0x)
    o2 = ux * (q1y - p0y) - uy * (q1x - p0x)
    o3 = vx * (p0y - q0y) - vy * (p0x - q0x)
    o4 = vx * (p1y - q0y) - vy * (p1x - q0x)
    return np.sqrt(np.where((o1 * o2 < 0) & (o3 * o4 < 0), 0.0, d))


_ANGLES = 128  # heading bins of the precomputed dash stamps (2.8 degrees)
_SUB = 8  # sub-pixel start positions per axis of the precomputed ink stamps
_RING = 16  # points on the rim of a marker disc tested for clearance


class _Kit:
    """Everything precomputed for one style.

    The generator keeps, per image, a boolean raster ``f`` times finer than the image, True
    where the centre line of a new dash may not pass: within ``width + margin`` of a drawn
    dash, within ``marker_radius + width/2 + margin`` of a marker, or near the border. A
    candidate dash is free iff the points sampled along its centre line (every 1/f px) all
    land on free cells, so every clearance holds to about one cell. The raster extends
    ``pad`` pixels past the image so that no lookup or stamp needs clipping.

    Stamps (computed once from the exact distance ``_pseg2``): the keep-out zone of a dash
    per heading bin as cell offsets from its start cell, the zone of a marker disc, and the
    anti-aliased ink of a dash per heading bin and 1/8-pixel start (for rendering). The
    price: starts rounded to a cell (or to 1/8 px), headings to 2.8 degrees.
    """

    def __init__(self, st: Style):
        self.st = st
        self.f = f = max(2, 128 // st.size)
        self.r = r = st.width / 2
        self.pad = pad = 2 * (st.dash_gap + st.dash_len) + st.width + st.margin + st.marker_radius + 2.0
        self.n = n = int(math.ceil((st.size + 2 * pad) * f))
        centres = (np.arange(n) + 0.5) / f - pad  # cell centres in image pixels
        edge = st.border + r
        out = (centres < edge) | (centres > st.size - edge)
        self.template = np.zeros((n, n), dtype=bool)
        self.template[out, :] = True
        self.template[:, out] = True
        # zone of a dash: its centre line keeps 2r + margin from another dash's
        zones = [self._zone(2 * math.pi * a / _ANGLES, 2 * r + st.margin) for a in range(_ANGLES)]
        C = max(len(z[0]) for z in zones)
        zone_dy = np.array([np.pad(dy, (0, C - len(dy)), mode="edge") for dy, _ in zones])  # (A, C)
        zone_dx = np.array([np.pad(dx, (0, C - len(dx)), mode="edge") for _, dx in zones])
        self.zone_flat = zone_dy * n + zone_dx  # offsets in the flattened raster
        R = st.marker_radius + r + st.margin
        k = np.arange(-math.ceil(R * f) - 1, math.ceil(R * f) + 2)
        dy, dx = np.nonzero((k[:, None] / f) ** 2 + (k[None, :] / f) ** 2 < R * R)
        self.disc_flat = k[dy] * n + k[dx]
        # a marker disc is clear iff its centre and the points at rm - r around it are free
        phi = np.arange(_RING) * (2 * math.pi / _RING)
        rr = max(st.marker_radius - r, 0.0)
        self.ring_dx = np.concatenate([[0.0], rr * np.cos(phi)])
        self.ring_dy = np.concatenate([[0.0], rr * np.sin(phi)])
        self.along = np.linspace(0.0, st.dash_len, int(math.ceil(st.dash_len * f)) + 1)  # every <= 1/f px
        self.along2 = np.concatenate([self.along, self.along + st.dash_len + st.dash_gap])  # + the next dash
        self.max_turn = min(math.pi / (2 * st.continuity), math.pi)
        K = st.n_candidates
        self.fan = np.arange(K) * (2 * self.max_turn / K) - self.max_turn  # + jitter in [0, step)
        self.ring = np.arange(K) * (2 * math.pi / K)
        self._ink_table()

    def _zone(self, theta: float, R: float):
        f, L = self.f, self.st.dash_len
        bx, by = L * math.cos(theta), L * math.sin(theta)  # the start is the centre of cell (0, 0)
        k = np.arange(-math.ceil((L + R) * f) - 1, math.ceil((L + R) * f) + 2)
        dy, dx = np.nonzero(_pseg2(k[None, :] / f, k[:, None] / f, 0.0, 0.0, bx, by) < R * R)
        return k[dy], k[dx]

    def cells(self, x, y):
        """Flat raster index of the cells holding points (x, y)."""
        iy = ((y + self.pad) * self.f).astype(np.intp)
        return iy * self.n + ((x + self.pad) * self.f).astype(np.intp)

    def _ink_table(self):
        """Anti-aliased ink of one dash for every heading bin and 1/8-pixel start, all
        on one (h, w) grid whose pixel (oy, ox) holds the start: (A, SUB, SUB, h, w)."""
        L, r = self.st.dash_len, self.r
        reach = math.ceil(L + r) + 2
        k = np.arange(-reach, reach + 1)  # pixel offsets from the start pixel
        q = (np.arange(_SUB) + 0.5) / _SUB  # start position inside its pixel
        th = 2 * math.pi * np.arange(_ANGLES) / _ANGLES
        x0 = q[None, :, None, None, None]  # (1, SUB, 1, 1, 1)
        y0 = q[None, None, :, None, None]
        bx = x0 + L * np.cos(th)[:, None, None, None, None]
        by = y0 + L * np.sin(th)[:, None, None, None, None]
        d = np.sqrt(_pseg2(k[None, None, None, None, :] + 0.5, k[None, None, None, :, None] + 0.5, x0, y0, bx, by))
        self.ink = np.clip(r + 0.5 - d, 0.0, 1.0).astype(np.float32)  # (A, SUB(x), SUB(y), h, w)
        self.ink_origin = reach


_KITS: dict[Style, _Kit] = {}


def _kit(st: Style) -> _Kit:
    if st not in _KITS:
        _KITS[st] = _Kit(st)
    return _KITS[st]


def _angle_bins(dx, dy) -> np.ndarray:
    return np.rint(np.arctan2(dy, dx) * (_ANGLES / (2 * math.pi))).astype(np.intp) % _ANGLES


class PathSample(NamedTuple):
    image: np.ndarray  # (size, size) uint8
    label: int  # 1: the markers lie on one path
    paths: list  # [A, B, distractors...], each (n, 2, 2): dashes as (start, end) points (x, y)
    markers: np.ndarray  # (2, 2) marker centres (x, y)


class _Batch:
    """Images generated in lockstep: each step, every image of the batch places one dash
    (or picks a start), in a few numpy calls over the whole batch: a loop per dash and per
    image would be 10-50x slower, as numpy calls on tiny arrays cost microseconds each.
    A finished image leaves its slot to the next one in the queue. Each image draws only
    from its own generator, a fixed count of numbers per step, so neither the batch nor the
    slot it runs in changes it.

    Per image, stages 0 (path A), 1 (path B), 2.. (distractors) run in order; ``j`` is the
    number of dashes of the current path (-1: it needs a start point). A main path that
    runs out of room starts over (B from a copy of the canvas taken when A was finished; A,
    or B after ``tries`` failures, from an empty canvas); a distractor stops short.
    """

    U = 4  # uniforms per image per step: start x (or B's direction), start y, fan offset, choice
    BLOCK = 128  # steps of uniforms drawn at a time

    def __init__(self, kit: _Kit, rngs: list, slots: int = 256):
        st = kit.st
        self.kit, self.st, self.rngs = kit, st, list(rngs)
        self.queue = list(range(len(self.rngs)))[::-1]  # images waiting for a slot (pop from the end)
        self.results: dict[int, tuple[list, int]] = {}
        B = min(slots, len(self.rngs))
        self.n_stages = 2 + st.n_distractors
        self.nmax = max(st.n_dashes, st.distractor_dashes)
        self.image = np.full(B, -1, dtype=np.intp)  # image index in each slot (-1: idle)
        self.busy = np.broadcast_to(kit.template, (B, kit.n, kit.n)).copy()
        self.flat = self.busy.reshape(-1)  # a view: indexing it with one array is cheaper than with three
        self.n2 = kit.n * kit.n
        self.snap = self.busy.copy()  # each slot's canvas once path A was finished
        self.stage = np.zeros(B, dtype=np.intp)
        self.j = np.full(B, -1, dtype=np.intp)
        self.cur = np.zeros((B, 3))  # x, y, heading at the end of the current path
        self.start = np.zeros((B, 2))  # start of the current path
        self.a_start = np.zeros((B, 2))
        self.tries = np.zeros(B, dtype=np.intp)  # failed attempts at the current stage
        self.restarts = np.zeros(B, dtype=np.intp)
        self.S = np.zeros((B, self.n_stages, self.nmax, 2))  # dash starts
        self.E = np.zeros((B, self.n_stages, self.nmax, 2))  # dash ends
        self.length = np.zeros((B, self.n_stages), dtype=np.intp)
        self.u = np.zeros((B, self.BLOCK, self.U))
        self.upos = np.zeros(B, dtype=np.intp)
        self._new_dashes: list = []  # (slot, stage, dash) to stamp at the end of the step
        self._new_discs: list = []  # (slot, x, y)
        for b in range(B):
            self._load(b)

    def _load(self, b: int) -> None:
        """Put the next queued image into slot b (or leave it idle)."""
        if not self.queue:
            self.image[b] = -1
            self.stage[b] = self.n_stages
            return
        self.image[b] = i = self.queue.pop()
        self.u[b] = self.rngs[i].random((self.BLOCK, self.U))
        self.upos[b] = 0
        self.restarts[b] = 0
        self._reset(np.array([b]))

    def _reset(self, b: np.ndarray) -> None:
        self.busy[b] = self.kit.template
        self.stage[b], self.j[b], self.tries[b] = 0, -1, 0
        self.length[b] = 0

    def uniforms(self) -> np.ndarray:
        B = len(self.image)
        u = self.u[np.arange(B), self.upos]  # (B, U)
        self.upos += 1
        for b in np.flatnonzero((self.upos == self.BLOCK) & (self.image >= 0)).tolist():
            self.u[b] = self.rngs[self.image[b]].random((self.BLOCK, self.U))
            self.upos[b] = 0
        self.upos[self.image < 0] = 0
        return u

    # -- raster ----------------------------------------------------------------------
    def free_points(self, b, x, y) -> np.ndarray:
        return ~self.flat[b * self.n2 + self.kit.cells(x, y)]

    def disc_clear(self, b: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        st, kit = self.st, self.kit
        lo, hi = st.border + st.marker_radius, st.size - st.border - st.marker_radius
        inside = (x >= lo) & (x <= hi) & (y >= lo) & (y <= hi)
        xs = np.minimum(np.maximum(x, lo), hi)[:, None] + kit.ring_dx
        ys = np.minimum(np.maximum(y, lo), hi)[:, None] + kit.ring_dy
        return inside & self.free_points(b[:, None], xs, ys).all(axis=1)

    def flush(self) -> None:
        """Stamp the dashes and discs committed during this step."""
        kit = self.kit
        if self._new_dashes:
            b, g, d = np.array(self._new_dashes).T
            s, e = self.S[b, g, d], self.E[b, g, d]
            a = _angle_bins(e[:, 0] - s[:, 0], e[:, 1] - s[:, 1])
            base = b * self.n2 + kit.cells(s[:, 0], s[:, 1])
            self.flat[base[:, None] + kit.zone_flat[a]] = True
            self._new_dashes = []
        if self._new_discs:
            b, x, y = np.array(self._new_discs).T
            base = b.astype(np.intp) * self.n2 + kit.cells(x, y)
            self.flat[base[:, None] + kit.disc_flat] = True
            self._new_discs = []

    def _unqueue(self, b: np.ndarray) -> None:
        drop = set(b.tolist())
        self._new_dashes = [t for t in self._new_dashes if t[0] not in drop]
        self._new_discs = [t for t in self._new_discs if t[0] not in drop]

    def fail_main(self, b: np.ndarray) -> None:
        """Path A or B of these slots ran out of room: start it over."""
        if len(b) == 0:
            return
        self._unqueue(b)
        st = self.st
        self.tries[b] += 1
        redo_b = b[(self.stage[b] == 1) & (self.tries[b] <= st.tries)]
        self.busy[redo_b] = self.snap[redo_b]
        self.j[redo_b] = -1
        self.length[redo_b, 1] = 0
        full = b[(self.stage[b] == 0) | (self.tries[b] > st.tries)]
        self.restarts[full] += 1
        if (self.restarts[full] > 10 * st.tries).any():
            raise RuntimeError(f"could not place two paths of {st.n_dashes} dashes in a {st.size}x{st.size} image: "
                               f"use fewer or shorter dashes, or a smaller margin")
        self._reset(full)

    def next_stage(self, b: np.ndarray) -> None:
        a_done = b[self.stage[b] == 0]
        self.stage[b] += 1
        self.j[b] = -1
        self.tries[b] = 0
        if len(a_done):
            self.flush()  # A's last stamps are part of the snapshot
            self.snap[a_done] = self.busy[a_done]

    # -- one step --------------------------------------------------------------------
    def step(self) -> bool:
        active = self.stage < self.n_stages
        if not active.any():
            return False
        u = self.uniforms()  # (B, U)
        self._starts(np.flatnonzero(active & (self.j < 0)), u)
        self._grow(np.flatnonzero((self.stage < self.n_stages) & (self.j >= 0)), u)
        self.flush()
        for b in np.flatnonzero((self.stage >= self.n_stages) & (self.image >= 0)).tolist():
            self.results[int(self.image[b])] = (
                [np.stack([self.S[b, g, :n], self.E[b, g, :n]], axis=1).copy()
                 for g, n in enumerate(self.length[b].tolist()) if n > 0],
                int(self.restarts[b]),
            )
            self._load(b)
        return True

    def _starts(self, b: np.ndarray, u: np.ndarray) -> None:
        if len(b) == 0:
            return
        st = self.st
        stage = self.stage[b]
        rm, r = st.marker_radius, self.kit.r
        x = st.border + rm + u[b, 0] * (st.size - 2 * (st.border + rm))  # stage 0: A anywhere
        y = st.border + rm + u[b, 1] * (st.size - 2 * (st.border + rm))
        is_b = stage == 1  # B starts seed_distance from A's start
        phi = 2 * math.pi * u[b, 0]
        x = np.where(is_b, self.a_start[b, 0] + st.seed_distance * np.cos(phi), x)
        y = np.where(is_b, self.a_start[b, 1] + st.seed_distance * np.sin(phi), y)
        main = stage < 2
        lo, hi = st.border + r, st.size - st.border - r  # distractors anywhere
        x = np.where(main, x, lo + u[b, 0] * (hi - lo))
        y = np.where(main, y, lo + u[b, 1] * (hi - lo))
        ok = np.where(main, self.disc_clear(b, x, y), self.free_points(b, x, y))
        go = b[ok]
        self.start[go, 0], self.start[go, 1] = x[ok], y[ok]
        self.cur[go, 0], self.cur[go, 1] = x[ok], y[ok]
        self.j[go] = 0
        a = go[self.stage[go] == 0]
        self.a_start[a] = self.start[a]
        bad = b[~ok]
        self.tries[bad] += 1
        give_up = bad[self.tries[bad] > st.tries]
        self.fail_main(give_up[self.stage[give_up] < 2])  # a main path found no start: start over
        self.next_stage(give_up[self.stage[give_up] >= 2])  # a distractor found no room: skip it

    def _grow(self, b: np.ndarray, u: np.ndarray) -> None:
        if len(b) == 0:
            return
        st, kit = self.st, self.kit
        K = st.n_candidates
        j = self.j[b]
        first = j == 0
        turn = kit.fan + u[b, 2, None] * (2 * kit.max_turn / K)  # (B', K)
        theta = np.where(first[:, None], kit.ring + u[b, 2, None] * (2 * math.pi / K), self.cur[b, 2, None] + turn)
        weight = np.where(first[:, None], 1.0, np.cos(st.continuity * turn) ** 2)
        gap = np.where(first, 0.0, st.dash_gap)
        c, s = np.cos(theta), np.sin(theta)
        dist = gap[:, None] + kit.along2  # (B', 2P): this dash, then the next one straight ahead
        px = self.cur[b, 0, None, None] + c[:, :, None] * dist[:, None, :]  # (B', K, 2P)
        py = self.cur[b, 1, None, None] + s[:, :, None] * dist[:, None, :]
        free = self.free_points(b[:, None, None], px, py)
        P = len(kit.along)
        ok = free[:, :, :P].all(axis=2)  # (B', K)
        # look ahead: prefer turns with room for another dash (steers away from walls)
        weight = weight * ok * np.where(free[:, :, P:].all(axis=2), 1.0, 0.05)
        w = np.cumsum(weight, axis=1)
        placed = w[:, -1] > 0
        k = np.minimum((w < u[b, 3, None] * w[:, -1:]).sum(axis=1), K - 1)
        # -- slots that placed a dash
        i = np.flatnonzero(placed)
        bb, kk, jj, gg = b[i], k[i], j[i], self.stage[b[i]]
        ck, sk = c[i, kk], s[i, kk]
        sx, sy = self.cur[bb, 0] + gap[i] * ck, self.cur[bb, 1] + gap[i] * sk
        ex, ey = sx + st.dash_len * ck, sy + st.dash_len * sk
        self.S[bb, gg, jj] = np.stack([sx, sy], axis=1)
        self.E[bb, gg, jj] = np.stack([ex, ey], axis=1)
        self.cur[bb] = np.stack([ex, ey, theta[i, kk]], axis=1)
        self.j[bb] = jj + 1
        self.length[bb, gg] = jj + 1
        main = gg < 2
        done = jj + 1 == np.where(main, st.n_dashes, st.distractor_dashes)
        # a finished main path needs a clear end disc; checked before this step's stamps,
        # so that the two dashes next to it do not count
        end_bad = done & main & ~self.disc_clear(bb, ex, ey)
        keep = ~end_bad
        for t in np.flatnonzero(keep & (jj >= 1)).tolist():  # the dash before the new one
            self._new_dashes.append((bb[t], gg[t], jj[t] - 1))
        for t in np.flatnonzero(keep & main & (jj == 1)).tolist():  # start disc, from the 3rd dash on
            self._new_discs.append((bb[t], self.start[bb[t], 0], self.start[bb[t], 1]))
        fin = np.flatnonzero(done & keep)
        for t in fin.tolist():
            self._new_dashes.append((bb[t], gg[t], jj[t]))
            if main[t]:
                if jj[t] == 0:  # a one-dash main path: its start disc too
                    self._new_discs.append((bb[t], self.start[bb[t], 0], self.start[bb[t], 1]))
                self._new_discs.append((bb[t], ex[t], ey[t]))
        self.fail_main(bb[end_bad])
        self.next_stage(bb[fin])
        # -- slots that could not: a main path starts over, a distractor stops short
        f = np.flatnonzero(~placed)
        bf, jf = b[f], j[f]
        mainf = self.stage[bf] < 2
        self.fail_main(bf[mainf])
        d = ~mainf
        for t in np.flatnonzero(d & (jf >= 1)).tolist():
            self._new_dashes.append((bf[t], self.stage[bf[t]], jf[t] - 1))
        self.next_stage(bf[d & (jf >= 1)])
        retry = bf[d & (jf == 0)]  # no room for even one dash: another start
        self.j[retry] = -1
        self.tries[retry] += 1
        self.next_stage(retry[self.tries[retry] > st.tries])


def make_samples(rngs: list, st: Style, labels) -> list[PathSample]:
    """Images for the given labels, image i drawn from generator ``rngs[i]`` alone (the
    construction is in the module docstring)."""
    labels = [int(x) for x in labels]
    if any(label not in (0, 1) for label in labels) or len(labels) != len(rngs):
        raise ValueError(f"need one label (0 or 1) per generator, got {len(labels)} labels {sorted(set(labels))} "
                         f"for {len(rngs)} generators")
    batch = _Batch(_kit(st), rngs)
    while batch.step():
        pass
    scenes = []
    for i, label in enumerate(labels):
        paths, _ = batch.results[i]
        ref, other = (paths[0], paths[1]) if rngs[i].random() < 0.5 else (paths[1], paths[0])
        scenes.append((paths, np.stack([ref[0, 0], ref[-1, 1] if label == 1 else other[-1, 1]])))
    images = render_fast(scenes, st)
    return [PathSample(img, label, paths, markers) for img, label, (paths, markers) in zip(images, labels, scenes)]


def make_sample(rng: np.random.Generator, st: Style, label: int) -> PathSample:
    """One image with the given label."""
    return make_samples([rng], st, [label])[0]


def _stamp(img: np.ndarray, a, b, r: float, centres: np.ndarray) -> None:
    """Draw the capsule a-b of radius r, anti-aliased (a 1 px ramp), max-compositing.
    ``centres[i] = i + 0.5``: pixel (row i, column j) has its centre at (j + 0.5, i + 0.5)."""
    S = img.shape[0]
    (ax, ay), (bx, by) = a, b
    x0, x1 = max(int(min(ax, bx) - r - 1), 0), min(int(max(ax, bx) + r + 2), S)
    y0, y1 = max(int(min(ay, by) - r - 1), 0), min(int(max(ay, by) + r + 2), S)
    if x0 >= x1 or y0 >= y1:
        return
    d = np.sqrt(_pseg2(centres[x0:x1], centres[y0:y1, None], ax, ay, bx, by))
    patch = img[y0:y1, x0:x1]
    np.maximum(patch, np.minimum(np.maximum(r + 0.5 - d, 0.0), 1.0), out=patch)


def render(paths: list, markers: np.ndarray, st: Style) -> np.ndarray:
    """uint8 image (size, size) of paths (each (n, 2, 2) dashes) as capsules of width
    ``width`` and markers as discs, drawn exactly: the reference for :func:`render_fast`.
    Pixel (row i, column j) has its centre at (x, y) = (j + 0.5, i + 0.5)."""
    img = np.zeros((st.size, st.size))
    centres = np.arange(st.size) + 0.5
    for p in paths:
        for a, b in np.asarray(p).tolist():
            _stamp(img, a, b, st.width / 2, centres)
    for c in np.asarray(markers).tolist():
        _stamp(img, c, c, st.marker_radius, centres)
    return np.round(img * 255).astype(np.uint8)


def render_fast(scenes: list[tuple[list, np.ndarray]], st: Style) -> np.ndarray:
    """:func:`render` for many images at once, ``scenes`` = [(paths, markers), ...], with
    precomputed dash stamps (starts rounded to 1/8 px, headings to 2.8 degrees): what the
    generator uses. Returns uint8 (len(scenes), size, size)."""
    kit = _kit(st)
    o = kit.ink_origin
    P = o + 1  # margin around the image: stamps never reach beyond it
    N = len(scenes)
    img = np.zeros((N, st.size + 2 * P, st.size + 2 * P), dtype=np.float32)
    dashes = [(i, p) for i, (paths, _) in enumerate(scenes) for p in paths]
    if dashes:
        idx = np.concatenate([np.full(len(p), i) for i, p in dashes])
        d = np.concatenate([np.asarray(p, dtype=float).reshape(-1, 2, 2) for _, p in dashes])
        a = _angle_bins(d[:, 1, 0] - d[:, 0, 0], d[:, 1, 1] - d[:, 0, 1])
        px, py = np.floor(d[:, 0, 0]), np.floor(d[:, 0, 1])
        qx = ((d[:, 0, 0] - px) * _SUB).astype(np.intp)
        qy = ((d[:, 0, 1] - py) * _SUB).astype(np.intp)
        k = np.arange(kit.ink.shape[-1])
        ys = (py.astype(np.intp) + P - o)[:, None, None] + k[None, :, None]
        xs = (px.astype(np.intp) + P - o)[:, None, None] + k[None, None, :]
        np.maximum.at(img, (idx[:, None, None], ys, xs), kit.ink[a, qx, qy])
    img = img[:, P:-P, P:-P]
    centres = np.arange(st.size) + 0.5
    for i, (_, markers) in enumerate(scenes):
        for c in np.asarray(markers).tolist():
            _stamp(img[i], c, c, st.marker_radius, centres)
    return np.round(img * 255).astype(np.uint8)


# ---------------------------------------------------------------------------- the tasks
def pair_label(seed: int, split: str, index: int) -> int:
    """Items 2k and 2k+1 get opposite labels; which one is 1 is drawn per pair."""
    first = int(sample_rng(seed, split, index // 2, stream=1).integers(2))
    return first ^ (index % 2)


def _gen_shard(style: dict, seed: int, split: str, start: int, count: int):
    st = Style(**style)
    idx = range(start, start + count)
    out = make_samples([sample_rng(seed, split, i) for i in idx], st, [pair_label(seed, split, i) for i in idx])
    return np.stack([s.image for s in out]), np.array([s.label for s in out], dtype=np.uint8)


@dataclass
class PathfinderConfig:
    seed: int = 0
    difficulty: Literal["easy", "hard"] = "hard"
    # Overrides of the preset (None: the preset's value).
    side: int | None = None  # image side (Style.size: Pathfinder 32, Path-X 128), L = side²
    dash_len: float | None = None
    dash_gap: float | None = None
    width: float | None = None
    margin: float | None = None
    n_dashes: int | None = None
    continuity: float | None = None
    n_distractors: int | None = None
    distractor_dashes: int | None = None
    marker_radius: float | None = None
    seed_distance: float | None = None
    # Not geometry: average-pool the rendered image by this factor (L = (size / pool)^2).
    pool: int = 1

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name not in _NOT_STYLE and v is not None and v < (0 if f.name == "n_distractors" else 1e-9):
                raise ValueError(f"{f.name} must be positive, got {v}")
        if isinstance(self.pool, bool) or not isinstance(self.pool, int) or self.pool < 1:
            raise ValueError(f"pool must be a positive integer, got {self.pool!r}")


@dataclass
class PathXConfig(PathfinderConfig):
    pass


_NOT_STYLE = ("seed", "difficulty", "pool")  # config fields that are not Style overrides


def style_of(task: str, config: PathfinderConfig) -> Style:
    base = PRESETS[(task, config.difficulty)]
    over = {("size" if f.name == "side" else f.name): getattr(config, f.name) for f in dataclasses.fields(config)
            if f.name not in _NOT_STYLE and getattr(config, f.name) is not None}
    st = dataclasses.replace(base, **over)
    if st.seed_distance < 2 * st.marker_radius + st.margin:
        raise ValueError(f"seed_distance={st.seed_distance} leaves no room for two markers: it must be at least "
                         f"2 * marker_radius + margin = {2 * st.marker_radius + st.margin}")
    return st


@register_task("pathfinder", config=PathfinderConfig)
class Pathfinder(CachedTask):
    """Pathfinder 32x32: pixels (1024, 1) in [-1, 1]; label 1 if the markers are joined."""

    default_sizes = {"train": 20_000, "val": 2_000, "test": 2_000}
    version = 1
    shard_size = 512  # images per unit of parallel work (generated in lockstep, 256 at a time: see _Batch)

    @classmethod
    def style(cls, config) -> Style:
        return style_of(cls.task_name, config)

    @classmethod
    def make_info(cls, config, split) -> TaskInfo:
        S = cls.style(config).size
        check_pool(config.pool, S)
        S //= config.pool
        return TaskInfo(name=cls.task_name, inputs="real", d_input=1, n_classes=2, seq_len=S * S, target="class",
                        metric="accuracy", description=f"are the two markers joined by a path? ({S}x{S} pixels, row-major)")

    @classmethod
    def generate(cls, config, split, size, *, workers=None, progress=True):
        style = dataclasses.asdict(cls.style(config))
        shards = [(style, config.seed, split, s, n) for s, n in shard_ranges(size, cls.shard_size)]
        out = run_shards(_gen_shard, shards, workers=workers, desc=f"{cls.task_name} {split}", progress=progress,
                         total=size, advance=lambda r: len(r[1]))
        return {"images": pool_images(np.concatenate([o[0] for o in out]), config.pool),
                "labels": np.concatenate([o[1] for o in out])}

    def __len__(self) -> int:
        return len(self.arrays["labels"])

    def item(self, index: int):
        img = torch.from_numpy(np.asarray(self.arrays["images"][index], dtype=np.float32))
        return (img.reshape(-1, 1) / 127.5 - 1.0), int(self.arrays["labels"][index])  # (S*S, 1)


@register_task("pathx", config=PathXConfig)
class PathX(Pathfinder):
    """Path-X 128x128: pixels (16384, 1) in [-1, 1]; label 1 if the markers are joined."""


# ---------------------------------------------------------------------------- docs figure
def save_grid(path: str, n: int = 4, seed: int = 0) -> None:
    """A PNG with ``n`` examples of each of Pathfinder easy/hard and Path-X easy/hard."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [("pathfinder", "easy"), ("pathfinder", "hard"), ("pathx", "easy"), ("pathx", "hard")]
    fig, axes = plt.subplots(len(rows), n, figsize=(2.2 * n, 2.35 * len(rows)))
    for r, (task, diff) in enumerate(rows):
        st = PRESETS[(task, diff)]
        samples = make_samples([sample_rng(seed, "test", c) for c in range(n)], st,
                               [pair_label(seed, "test", c) for c in range(n)])
        for c, s in enumerate(samples):
            ax = axes[r, c]
            ax.imshow(s.image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{task} {diff}: {'joined' if s.label else 'not joined'}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Pathfinder / Path-X example images")
    ap.add_argument("--grid", required=True, help="output PNG path, e.g. docs/img/pathfinder_grid.png")
    ap.add_argument("--n", type=int, default=4, help="examples per row")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    save_grid(args.grid, n=args.n, seed=args.seed)
    print(f"wrote {args.grid}")


if __name__ == "__main__":
    main()
