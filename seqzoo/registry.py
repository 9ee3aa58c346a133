"""The layer registry: ``@register(name, config=XConfig)``, ``build``, ``list_layers``.

Layers live one per module in :mod:`seqzoo.layers`; the registry imports that package's
modules the first time it is asked for a layer (not when seqzoo is imported), so
``import seqzoo`` stays cheap and a new layer file is picked up without editing a list.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seqzoo.config import ConfigError, closest_hint, config_file, config_from_dict, load_yaml

__all__ = ["Registry", "Spec", "register", "build", "list_layers", "get_layer", "make_config", "LayerSpec"]


@dataclass(frozen=True)
class Spec:
    """A registered class and the config dataclass it is built from."""

    name: str
    cls: type
    config: type


LayerSpec = Spec


class Registry:
    """Name -> (class, config dataclass), filled by a class decorator. Every module of
    ``package`` whose name does not start with ``_`` is imported the first time the
    registry is read. Shared by the layer and the task registries."""

    def __init__(self, kind: str, package: str, base: Callable[[], type], required_field: str, name_attr: str):
        self.kind, self.package, self._base = kind, package, base
        self.required_field, self.name_attr = required_field, name_attr
        self._specs: dict[str, Spec] = {}
        self._discovered = False

    def register(self, name: str, *, config: type):
        """Class decorator registering ``cls`` under ``name``, built from dataclass ``config``."""
        where = f"register({name!r})"
        if not dataclasses.is_dataclass(config):
            raise TypeError(f"{where}: config must be a dataclass, got {config!r}")
        if self.required_field not in {f.name for f in dataclasses.fields(config)}:
            raise TypeError(f"{where}: {config.__name__} needs a {self.required_field} field")

        def wrap(cls: type) -> type:
            base = self._base()
            if not (isinstance(cls, type) and issubclass(cls, base)):
                raise TypeError(f"{where}: {cls!r} is not a {base.__name__} subclass")
            old = self._specs.get(name)
            if old is not None and old.cls.__qualname__ != cls.__qualname__:
                raise ValueError(
                    f"{self.kind} name {name!r} is already registered by {old.cls.__module__}.{old.cls.__qualname__}"
                )
            setattr(cls, self.name_attr, name)
            cls.Config = config
            self._specs[name] = Spec(name, cls, config)
            return cls

        return wrap

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        pkg = importlib.import_module(self.package)
        for mod in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
            if not mod.name.startswith("_"):
                importlib.import_module(f"{self.package}.{mod.name}")

    def names(self) -> list[str]:
        self._discover()
        return sorted(self._specs)

    def get(self, name: str) -> Spec:
        self._discover()
        if not isinstance(name, str):
            raise ConfigError(f"{self.kind} name must be a string, got {type(name).__name__}")
        if name not in self._specs:
            raise ConfigError(
                f"unknown {self.kind} {name!r}.{closest_hint(name, self._specs)} "
                f"Registered {self.kind}s: {', '.join(sorted(self._specs))}"
            )
        return self._specs[name]


def _layer_base() -> type:
    from seqzoo.layer import SequenceLayer

    return SequenceLayer


_LAYERS = Registry("layer", "seqzoo.layers", _layer_base, required_field="d_model", name_attr="registry_name")


def register(name: str, *, config: type):
    """Class decorator: register a :class:`~seqzoo.layer.SequenceLayer` under ``name``,
    built from the dataclass ``config`` (which must have a ``d_model`` field)."""
    return _LAYERS.register(name, config=config)


def list_layers() -> list[str]:
    """Names of all registered layers, sorted."""
    return _LAYERS.names()


def get_layer(name: str) -> Spec:
    return _LAYERS.get(name)


def _is_yaml_path(name: str) -> bool:
    return name.endswith((".yaml", ".yml"))


def _resolve(name: str, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A registry name, or a YAML file with ``layer: <name>`` and options (explicit options win)."""
    if isinstance(name, (str, Path)) and _is_yaml_path(str(name)):
        data = load_yaml(config_file(name, "layers"))  # a path, or a packaged name ("s4d.yaml")
        if "layer" not in data:
            raise ConfigError(f"{name}: a layer config needs a 'layer: <name>' entry")
        layer = data.pop("layer")
        return layer, {**data, **options}
    return name, options


def _make(name: str, d_model: int | None, options: dict[str, Any]) -> tuple[Spec, Any]:
    name, options = _resolve(name, options)
    spec = get_layer(name)
    if d_model is not None:
        options["d_model"] = d_model
    if "d_model" not in options:
        raise ConfigError(f"layer {name!r}: d_model is required (the model width)")
    d = options["d_model"]
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise ConfigError(f"layer {name!r}: d_model must be a positive integer, got {d!r}")
    return spec, config_from_dict(spec.config, options, context=f"layer {name!r}")


def make_config(name: str, d_model: int | None = None, **options: Any) -> Any:
    """The validated config dataclass instance for layer ``name`` (or a YAML path)."""
    return _make(name, d_model, options)[1]


def build(name: str, d_model: int | None = None, **options: Any):
    """Build a registered layer: ``seqzoo.build("s4d", d_model=256, d_state=64)``.

    ``name`` may also be a YAML file (``configs/layers/s4d.yaml``) holding ``layer: s4d``
    and options, or the name of one of seqzoo's layer configs (``"s4d.yaml"``, found by
    :func:`~seqzoo.config.config_file`); keyword options override the file. Unknown names
    or options raise a :class:`~seqzoo.config.ConfigError` listing the valid ones.
    """
    spec, config = _make(name, d_model, options)
    return spec.cls(config)
