"""The one place where every op picks its backend.

``select(op, backend, device)`` turns a request (``"auto" | "ref" | "cpp" | "cuda"``, or an
op-specific extra such as ``"mamba_ssm"``) into the backend that will run, and logs the
choice once per (op, device, backend). ``auto`` means: an extra backend registered as
``preferred`` for that device when it is ready (e.g. ``mamba_ssm``'s CUDA kernel, faster
than seqzoo's own), else the compiled kernel for the tensors' device when the extension
has one, else any other extra backend for that device, else the reference with a single
warning that says how to get the fast path. Asking explicitly for a backend that cannot
run raises, saying what is missing and how to install it.

A third-party extra is *ready* on a device only when its module really loads **and** a tiny
probe call on that device succeeds and agrees with seqzoo's reference, checked once per
process: a package whose Python interface imports while its compiled kernel is missing
(``mamba_ssm`` built with ``MAMBA_SKIP_CUDA_BUILD``, or an ABI-mismatched wheel, whose
interface catches the ImportError itself) is not ready, and ``auto`` says so in one log
line and uses seqzoo's own kernel. Its absence or breakage never changes a result and never
crashes an import.

``SEQZOO_BACKEND=ref`` (or ``cpp``/``cuda``/an extra) in the environment replaces ``auto``
globally, which is handy for benchmarks and bisecting.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from seqzoo import _ext

log = logging.getLogger("seqzoo")

BASE_BACKENDS = ("auto", "ref", "cpp", "cuda")


@dataclass
class ExtraBackend:
    """A backend outside seqzoo's own kernels. ``load()`` imports and returns the kernel
    (raising if it cannot); ``probe(kernel, device)`` runs a tiny call on ``device`` and
    raises if it fails or disagrees with the reference. ``package`` is the top-level module
    (to tell "not installed" from "installed but broken"), ``install`` how to get it."""

    devices: tuple[str, ...]
    load: Callable[[], Any]
    probe: Callable[[Any, torch.device], None] | None = None
    preferred: bool = False
    package: str | None = None
    install: str = ""
    dtypes: tuple[torch.dtype, ...] | None = None  # the input dtypes it takes (None: any)


# op -> {backend name: ExtraBackend}
_EXTRAS: dict[str, dict[str, ExtraBackend]] = {}
# (op, name, device type) -> (kernel, None) when ready, (None, why) when not: once per process
_ready: dict[tuple[str, str, str], tuple[Any, str | None]] = {}
_announced: set[tuple[str, str, str]] = set()
_explained: set[tuple[str, str, str]] = set()
_warned: set[tuple[str, str]] = set()


def register_extra_backend(
    op: str,
    name: str,
    devices: tuple[str, ...],
    load: Callable[[], Any],
    *,
    probe: Callable[[Any, torch.device], None] | None = None,
    preferred: bool = False,
    package: str | None = None,
    install: str = "",
    dtypes: tuple[torch.dtype, ...] | None = None,
) -> None:
    """Declare a backend (e.g. ``mamba_ssm``) that ``op`` can use on ``devices`` for inputs
    of ``dtypes``: see :class:`ExtraBackend`. ``preferred=True`` makes ``auto`` try it
    before seqzoo's own compiled kernel (only once it proved ready)."""
    _EXTRAS.setdefault(op, {})[name] = ExtraBackend(devices, load, probe, preferred, package, install, dtypes)


def extra_status(op: str, name: str, device: torch.device | str) -> tuple[Any, str | None]:
    """``(kernel, None)`` when extra backend ``name`` of ``op`` is ready on ``device``, else
    ``(None, why)``. Loaded and probed once per (op, backend, device type) and process."""
    device = torch.device(device)
    key = (op, name, device.type)
    if key not in _ready:
        spec = _EXTRAS[op][name]
        try:
            kernel = spec.load()
        except Exception as e:  # noqa: BLE001  ImportError, OSError (undefined symbols), ...
            missing = isinstance(e, ModuleNotFoundError) and spec.package and (e.name or "").split(".")[0] == spec.package
            what = "is not installed" if missing else f"does not load ({type(e).__name__}: {e})"
            _ready[key] = (None, f"{spec.package or name} {what}")
        else:
            try:
                if spec.probe is not None:
                    spec.probe(kernel, device)
            except Exception as e:  # noqa: BLE001  the kernel imports but cannot run here
                _ready[key] = (None, f"{spec.package or name} imports, but a probe call on {device.type} failed "
                                     f"({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''})")
            else:
                _ready[key] = (kernel, None)
    return _ready[key]


def extra_kernel(op: str, name: str, device: torch.device | str) -> Any:
    """The ready kernel of extra backend ``name`` (after :func:`select` chose it)."""
    kernel, why = extra_status(op, name, device)
    if kernel is None:
        raise RuntimeError(_cannot_run(op, name, why))
    return kernel


def _cannot_run(op: str, name: str, why: str | None) -> str:
    hint = _EXTRAS[op][name].install
    return f"seqzoo.ops.{op}: backend={name!r} cannot run here: {why}." + (f" To install it: {hint}" if hint else "")


def valid_backends(op: str) -> tuple[str, ...]:
    return BASE_BACKENDS + tuple(_EXTRAS.get(op, {}))


def _announce(op: str, device_type: str, choice: str) -> str:
    key = (op, device_type, choice)
    if key not in _announced:
        _announced.add(key)
        log.info("seqzoo.ops.%s on %s: using the %s backend", op, device_type, choice)
    return choice


def compiled_name(device_type: str) -> str:
    return "cuda" if device_type == "cuda" else "cpp"


@torch.compiler.assume_constant_result
def select(op: str, backend: str, device: torch.device | str, dtype: torch.dtype | None = None) -> str:
    """Return the backend that runs ``op`` for tensors on ``device`` (of ``dtype``, when
    given: ``auto`` passes over an extra that does not take it, e.g. float64).

    Under ``torch.compile`` the choice is made once, while tracing, and is a constant of the
    graph (it reads the environment, logs and probes: no tensor work to trace); a graph
    compiled before ``SEQZOO_BACKEND`` changes keeps the backend it was traced with."""
    device_type = torch.device(device).type
    valid = valid_backends(op)
    if backend not in valid:
        raise ValueError(f"seqzoo.ops.{op}: unknown backend {backend!r}; valid: {', '.join(valid)}")
    if backend == "auto":
        env = os.environ.get("SEQZOO_BACKEND", "").strip()
        if env and env != "auto":
            if env not in valid:
                raise ValueError(
                    f"SEQZOO_BACKEND={env!r} is not a backend of seqzoo.ops.{op}; "
                    f"valid: {', '.join(valid)}"
                )
            backend = env

    if backend == "auto":
        extras = _EXTRAS.get(op, {})
        fits = {n: device_type in e.devices and (dtype is None or e.dtypes is None or dtype in e.dtypes)
                for n, e in extras.items()}
        for name, spec in extras.items():
            if spec.preferred and fits[name] and _usable(op, name, device):
                return _announce(op, device_type, name)
        if _ext.has_kernel(op, device_type):
            return _announce(op, device_type, compiled_name(device_type))
        for name, spec in extras.items():
            if not spec.preferred and fits[name] and _usable(op, name, device):
                return _announce(op, device_type, name)
        if (op, device_type) not in _warned:
            _warned.add((op, device_type))
            if not _ext.available():
                why = f"the compiled extension seqzoo._C is not available ({_ext.load_error()}); {_ext.BUILD_HINT}"
            else:
                why = f"the compiled extension has no {device_type} kernel for it"
            warnings.warn(
                f"seqzoo.ops.{op}: falling back to the pure-PyTorch reference on {device_type} "
                f"(slow): {why}.",
                RuntimeWarning,
                stacklevel=3,
            )
        return _announce(op, device_type, "ref")

    if backend == "ref":
        return _announce(op, device_type, "ref")
    if backend in ("cpp", "cuda"):
        want = "cpu" if backend == "cpp" else "cuda"
        if device_type != want:
            raise ValueError(
                f"seqzoo.ops.{op}: backend={backend!r} runs on {want} tensors, but the inputs are "
                f"on {device_type}; use backend='auto' or move the tensors"
            )
        if not _ext.has_kernel(op, want):
            if not _ext.available():
                raise RuntimeError(
                    f"seqzoo.ops.{op}: backend={backend!r} needs the compiled extension, which is "
                    f"not available ({_ext.load_error()}); {_ext.BUILD_HINT}"
                )
            raise RuntimeError(
                f"seqzoo.ops.{op}: the compiled extension was built without a {want} kernel for "
                f"this op" + ("; rebuild on a machine with a CUDA toolkit and a CUDA torch" if want == "cuda" else "")
            )
        return _announce(op, device_type, backend)
    spec = _EXTRAS[op][backend]
    if device_type not in spec.devices:
        raise ValueError(
            f"seqzoo.ops.{op}: backend={backend!r} runs on {'/'.join(spec.devices)} tensors, not {device_type}"
        )
    if dtype is not None and spec.dtypes is not None and dtype not in spec.dtypes:
        raise ValueError(
            f"seqzoo.ops.{op}: backend={backend!r} takes {', '.join(str(d)[6:] for d in spec.dtypes)} inputs, "
            f"not {str(dtype)[6:]}; use backend='auto' (seqzoo's own kernels take it)"
        )
    kernel, why = extra_status(op, backend, device)
    if kernel is None:
        raise RuntimeError(_cannot_run(op, backend, why))
    return _announce(op, device_type, backend)


def _usable(op: str, name: str, device: torch.device | str) -> bool:
    """For ``auto``: is the extra ready? If not, say why once (a warning when the package is
    there but broken, info when it is simply not installed)."""
    kernel, why = extra_status(op, name, device)
    key = (op, name, torch.device(device).type)
    if kernel is None and key not in _explained:
        _explained.add(key)
        level = logging.INFO if why and why.endswith("is not installed") else logging.WARNING
        log.log(level, "seqzoo.ops.%s on %s: not using %s: %s; falling back to seqzoo's own backend",
                op, key[2], name, why)
    return kernel is not None
