"""Checkpoints of a training run: written atomically, verified before a resume.

One checkpoint is a folder ``<run>/checkpoints/step-<8 digits>/`` holding

- ``model.safetensors``: the model's parameters and buffers (safetensors; loads without
  unpickling anything),
- ``state.pt``: optimiser, scheduler, the RNG states of every process, the step, the data
  position (epoch and batches taken in it) and the loss history,
- ``manifest.json``, written last: the size and SHA-256 of the two files above.

All three are written into a temporary sibling folder that is then renamed, so a run
killed at any instant leaves either a complete checkpoint or none. What the rename cannot
guard against (a full disk, a partial copy of the run folder, a storage fault) changes a
file after the fact; :func:`verify` finds it by its size or its hash, and
:func:`resume_point` takes the newest checkpoint that verifies, naming those it skipped.
The oldest checkpoints beyond ``keep`` are removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["save", "folder", "latest", "load", "verify", "resume_point", "rng_state", "set_rng_state", "CheckpointError",
           "MODEL", "STATE", "MANIFEST"]

MODEL = "model.safetensors"
STATE = "state.pt"
MANIFEST = "manifest.json"
_FORMAT = "seqzoo-checkpoint-1"
_STEP_DIR = re.compile(r"^step-(\d{8})$")


def rng_state() -> dict[str, Any]:
    """Every random stream a training step may draw from (dropout, etc.)."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class CheckpointError(RuntimeError):
    """A run folder has checkpoints, but none of them can be resumed from."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_manifest(folder: Path, step: int) -> None:
    """Record size and hash of the files as they read back from disk (after their fsync);
    the manifest goes in by rename, so it is itself complete or absent."""
    files = {name: {"bytes": (folder / name).stat().st_size, "sha256": _sha256(folder / name)}
             for name in (MODEL, STATE)}
    tmp = folder / (MANIFEST + ".tmp")
    with open(tmp, "w") as f:
        json.dump({"format": _FORMAT, "step": step, "files": files}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / MANIFEST)


def verify(path: str | Path) -> str | None:
    """Why checkpoint folder ``path`` cannot be trusted, or None if every file it lists
    has the recorded size and SHA-256."""
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        files = manifest["files"]
    except FileNotFoundError:
        return f"no {MANIFEST} (an unfinished write, or a checkpoint of a seqzoo without manifests)"
    except (ValueError, KeyError, TypeError) as e:
        return f"{MANIFEST} is unreadable ({type(e).__name__}: {e})"
    for name in (MODEL, STATE):
        if name not in files:
            return f"{MANIFEST} does not list {name}"
    for name, rec in files.items():
        f = path / name
        if not f.is_file():
            return f"{name} is missing"
        size = f.stat().st_size
        if size != rec["bytes"]:
            return f"{name} has {size:,} bytes, the manifest records {rec['bytes']:,} (truncated or overwritten)"
        if _sha256(f) != rec["sha256"]:
            return f"{name} does not match its SHA-256 in the manifest (its bytes changed after it was written)"
    return None


def folder(run_dir: str | Path, step: int) -> Path:
    """Where checkpoint ``step`` of ``run_dir`` lives."""
    return Path(run_dir) / "checkpoints" / f"step-{step:08d}"


def save(run_dir: str | Path, step: int, model: nn.Module, state: dict[str, Any], keep: int = 2) -> Path:
    """Write checkpoint ``step`` of ``run_dir`` (temp folder + rename); keep the last ``keep``."""
    from safetensors.torch import save_model

    final = folder(run_dir, step)
    root = final.parent
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-step-{step:08d}-", dir=root))
    try:
        save_model(model, str(tmp / MODEL), metadata={"format": "pt", "seqzoo": "run", "step": str(step)})
        torch.save(state, tmp / STATE)
        for f in (tmp / MODEL, tmp / STATE):
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        _write_manifest(tmp, step)
        if final.exists():  # the same step written again (e.g. the end of a resumed run)
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    for old in _complete(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _complete(root: Path) -> list[Path]:
    """Checkpoint folders under ``root`` whose write finished (they have a manifest),
    oldest first; their files are not checked here (see :func:`verify`)."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _STEP_DIR.match(p.name) and (p / MANIFEST).is_file()]
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))


def resume_point(run_dir: str | Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest checkpoint of ``run_dir`` that verifies (None when the run has no
    checkpoint folders at all), and the newer ones skipped on the way with the reason.

    Raises :class:`CheckpointError`, naming every folder and what is wrong with it, when
    there are checkpoint folders but none verifies."""
    root = Path(run_dir) / "checkpoints"
    folders = sorted((p for p in root.iterdir() if _STEP_DIR.match(p.name)),
                     key=lambda p: int(_STEP_DIR.match(p.name).group(1))) if root.is_dir() else []
    skipped = []
    for path in reversed(folders):
        why = verify(path)
        if why is None:
            return path, skipped
        skipped.append((path, why))
    if skipped:
        lines = "\n".join(f"  {p.name}: {why}" for p, why in skipped)
        raise CheckpointError(f"no checkpoint in {root} can be resumed from:\n{lines}\n"
                              "Start the run over with --no-resume (resume=False), which deletes them, or restore "
                              "a good copy of the run folder, or pass another --out.")
    return None, skipped


def latest(run_dir: str | Path) -> Path | None:
    """The newest checkpoint of ``run_dir`` that verifies, or None."""
    try:
        return resume_point(run_dir)[0]
    except CheckpointError:
        return None


def load(path: str | Path, model: nn.Module, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load the model's weights from checkpoint folder ``path`` (strictly) and return its state dict."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    path = Path(path)
    try:
        missing, unexpected = load_model(model, str(path / MODEL), strict=False, device=str(map_location))
    except SafetensorError as e:  # not a safetensors file (any more)
        raise CheckpointError(f"checkpoint {path}: {MODEL} is unreadable ({e}); "
                              f"checkpoint.verify tells what changed") from None
    except RuntimeError as e:  # shapes differ
        raise RuntimeError(f"checkpoint {path} does not match the model (was it written with other model "
                           f"options?): {e}") from None
    if missing or unexpected:
        raise RuntimeError(f"checkpoint {path} does not match the model: missing {sorted(missing)[:5]}, "
                           f"unexpected {sorted(unexpected)[:5]} (was it written with other model options?)")
    return torch.load(path / STATE, map_location=map_location, weights_only=False)
