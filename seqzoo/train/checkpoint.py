"""Checkpoints of a training run, written atomically.

One checkpoint is a folder ``<run>/checkpoints/step-<8 digits>/`` holding

- ``model.safetensors``: the model's parameters and buffers (safetensors; loads without
  unpickling anything),
- ``state.pt``: optimiser, scheduler, the RNG states of every process, the step, the data
  position (epoch and batches taken in it) and the loss history.

Both are written into a temporary sibling folder that is then renamed, so a run killed at
any instant leaves either a complete checkpoint or none: :func:`latest` only ever sees
complete ones. The oldest checkpoints beyond ``keep`` are removed.
"""

from __future__ import annotations

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

__all__ = ["save", "latest", "load", "rng_state", "set_rng_state", "MODEL", "STATE"]

MODEL = "model.safetensors"
STATE = "state.pt"
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


def save(run_dir: str | Path, step: int, model: nn.Module, state: dict[str, Any], keep: int = 2) -> Path:
    """Write checkpoint ``step`` of ``run_dir`` (temp folder + rename); keep the last ``keep``."""
    from safetensors.torch import save_model

    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-step-{step:08d}-", dir=root))
    try:
        save_model(model, str(tmp / MODEL), metadata={"format": "pt", "seqzoo": "run", "step": str(step)})
        torch.save(state, tmp / STATE)
        for f in (tmp / MODEL, tmp / STATE):
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
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
    """Complete checkpoint folders under ``root``, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _STEP_DIR.match(p.name) and (p / MODEL).is_file() and (p / STATE).is_file()]
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))


def latest(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of ``run_dir``, or None."""
    found = _complete(Path(run_dir) / "checkpoints")
    return found[-1] if found else None


def load(path: str | Path, model: nn.Module, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load the model's weights from checkpoint folder ``path`` (strictly) and return its state dict."""
    from safetensors.torch import load_model

    path = Path(path)
    try:
        missing, unexpected = load_model(model, str(path / MODEL), strict=False, device=str(map_location))
    except RuntimeError as e:  # shapes differ
        raise RuntimeError(f"checkpoint {path} does not match the model (was it written with other model "
                           f"options?): {e}") from None
    if missing or unexpected:
        raise RuntimeError(f"checkpoint {path} does not match the model: missing {sorted(missing)[:5]}, "
                           f"unexpected {sorted(unexpected)[:5]} (was it written with other model options?)")
    return torch.load(path / STATE, map_location=map_location, weights_only=False)
