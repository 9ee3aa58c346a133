"""Flat option dataclasses: validation of user options (from Python, YAML or the command
line) against a config dataclass, with errors that name the key and the valid choices.

Also where config files are found: :func:`configs_dir` (the one lookup of the configs
folder) and :func:`config_file` (a path, or the name of a packaged config)."""

from __future__ import annotations

import dataclasses
import difflib
import importlib.resources
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

__all__ = ["ConfigError", "closest_hint", "config_file", "config_from_dict", "config_fields", "configs_dir", "load_yaml",
           "parse_override", "yaml_value"]


class ConfigError(ValueError):
    """An option that does not exist, or has a value of the wrong type."""


def closest_hint(word: str, choices: typing.Iterable[str]) -> str:
    """' Did you mean \'x\'?' for the closest of ``choices`` to ``word`` (empty if none is close)."""
    match = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" Did you mean {match[0]!r}?" if match else ""


def config_fields(cls: type) -> dict[str, Any]:
    """Field name -> resolved type annotation of a config dataclass."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against annotation ``tp``; return it (ints widened to float)."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        if value in args and not (isinstance(value, bool) and not any(isinstance(a, bool) for a in args)):
            return value
        raise ConfigError(
            f"{where} = {value!r} is not one of {', '.join(repr(a) for a in args)}.{closest_hint(value, args)}"
        )
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where} = {value!r} must be {_type_name(tp)}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} = {value!r} must be a list ({_type_name(tp)})")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if origin is tuple and args:
            if len(args) != len(value):
                raise ConfigError(f"{where} must have {len(args)} entries, got {len(value)}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        out = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} = {value!r} must be a mapping")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} = {value!r} must be true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where} = {value!r} must be an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where} = {value!r} must be a number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} = {value!r} must be a string")
    return value


def config_from_dict(cls: type, options: dict[str, Any], *, context: str | None = None) -> Any:
    """Build dataclass ``cls`` from ``options``, rejecting unknown keys and wrong types.

    ``context`` names what is being configured in error messages (e.g. "layer 's4d'").
    """
    context = context or cls.__name__
    fields = config_fields(cls)
    unknown = [k for k in options if k not in fields]
    if unknown:
        k = unknown[0]
        raise ConfigError(
            f"{context}: unknown option {k!r}.{closest_hint(k, fields)} Valid options: {', '.join(sorted(fields))}"
        )
    required = [
        f.name
        for f in dataclasses.fields(cls)
        if f.init
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
        and f.name not in options
    ]
    if required:
        raise ConfigError(f"{context}: missing required option(s) {', '.join(map(repr, required))}")
    values = {}
    for k, v in options.items():
        try:
            values[k] = _coerce(v, fields[k], k)
        except ConfigError as e:
            raise ConfigError(f"{context}: option {e}") from None
    try:
        return cls(**values)
    except (ValueError, TypeError) as e:  # cross-field checks in __post_init__
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{context}: {e}") from e


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-3`` as a string; read it as the float everyone means."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def yaml_value(text: str) -> Any:
    """Parse one YAML scalar/list the way config files are parsed."""
    return yaml.load(text, Loader=_Loader)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A flat YAML mapping from ``path`` (clear errors for a missing file or a non-mapping)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    with open(path) as f:
        data = yaml.load(f, Loader=_Loader) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of options at the top level, got {type(data).__name__}")
    return data


# ---------------------------------------------------------------------------- config files
def configs_dir() -> Path:
    """The configs folder (``layers/``, ``lra/``, ``presets/``, ``tokenizer/``), first found of

    1. ``$SEQZOO_CONFIGS`` (e.g. a folder made by ``seqzoo configs export``);
    2. a checkout's ``configs/``: the folder above the package holds it and ``pyproject.toml``,
       so editing a config in a checkout (or an editable install) takes effect at once;
    3. the copy shipped inside the installed package (``seqzoo/configs`` in the wheel).
    """
    env = os.environ.get("SEQZOO_CONFIGS")
    if env:
        if not Path(env).is_dir():
            raise ConfigError(f"SEQZOO_CONFIGS={env!r} is not a folder: point it at a configs folder "
                              "(`seqzoo configs export DIR` makes one) or unset it to use seqzoo's own")
        return Path(env)
    root = Path(__file__).resolve().parents[1]
    if (root / "configs").is_dir() and (root / "pyproject.toml").is_file():
        return root / "configs"
    packaged = importlib.resources.files("seqzoo").joinpath("configs")
    # an installed seqzoo is a folder on disk (it holds a compiled extension, so never a zip)
    if isinstance(packaged, Path) and packaged.is_dir():
        return packaged
    raise ConfigError(f"no configs folder: neither a checkout's configs/ beside {root / 'seqzoo'} nor the "
                      "packaged seqzoo/configs exists (a broken install: reinstall seqzoo); or set "
                      "SEQZOO_CONFIGS to a configs folder")


def config_file(name: str | Path, kind: str) -> Path:
    """The YAML file ``name`` names: a file that exists as given (absolute, or relative to the
    working directory), else a config of :func:`configs_dir`: ``<configs>/<kind>/<name>``
    (``"s4d.yaml"`` with kind ``"layers"``), or ``<configs>/<name>`` with any leading
    ``configs/`` dropped (``"configs/layers/s4d.yaml"``, as written in a checkout, also works
    where seqzoo is installed)."""
    path = Path(name)
    if path.is_file() or path.is_absolute():
        return path
    root = configs_dir()
    rel = Path(*path.parts[1:]) if path.parts[:1] == ("configs",) and len(path.parts) > 1 else path
    for candidate in (root / kind / rel, root / rel):
        if candidate.is_file():
            return candidate
    names = sorted(p.name for p in (root / kind).glob("*.y*ml")) if (root / kind).is_dir() else []
    raise ConfigError(f"config file {str(name)!r} not found: not a file here ({Path.cwd()}), nor a config in "
                      f"{root / kind}." + closest_hint(path.name, names)
                      + (f" Available {kind} configs: {', '.join(names)}" if names else ""))


def parse_override(text: str) -> tuple[str, Any]:
    """``"key=value"`` from a command line; the value is parsed as YAML (``3``, ``1e-3``,
    ``true``, ``[1, 2]``, ``lin``)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value")
    key, raw = text.split("=", 1)
    return key.strip(), yaml_value(raw) if raw.strip() else ""
