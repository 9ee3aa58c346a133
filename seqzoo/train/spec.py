"""A preset's own list of experiments: ``configs/presets/<preset>/suite.yaml``.

Without that file a preset runs every layer on every task (the quick and full presets).
With it, the preset says, per task, which layers run (each with its own ``key=value``
tuning), which option is swept (one run per value, e.g. MQAR's ``d_model``), the published
numbers to put beside ours, and the finding to check::

    mqar:
      title: "MQAR: accuracy against the model width (Zoology, Fig. 2)"
      sweep: {d_model: [32, 64, 128]}
      layers:
        attention: {lr: 0.001, "d_model=32": {steps: 6000}}   # why, in a comment
        mamba: {}
      published:
        source: "Arora et al. 2023 (Zoology), Fig. 2: L = 512, 64 key-value pairs"
        values: {attention: {d_model=64: 100.0}}
      expect: {attention: {d_model=32: 0.99, d_model=64: 0.99, d_model=128: 0.99}}

A layer's options may hold, under a sweep point's label (``"d_model=32"``), options for
that point alone (applied after the sweep's value).

A result's *columns*: ``test`` for a plain task; one per sweep value (``d_model=64``); for a
run with ``eval_lengths``, one per test length as a multiple of the training length
(``1x`` is the test split, ``16x`` the model on sequences 16 times longer). ``expect``
gives, per layer and column, the least test accuracy the paper's finding implies;
``published.values`` are percentages as the papers print them.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from seqzoo.config import ConfigError, closest_hint
from seqzoo.train.config import configs_dir, load_yaml

__all__ = ["TaskSpec", "load_spec", "columns_of"]

_KEYS = ("title", "layers", "sweep", "published", "expect", "note")


@dataclass(frozen=True)
class TaskSpec:
    task: str
    title: str
    layers: dict[str, tuple[str, ...]]  # layer -> its own overrides, "key=value"
    sweep: tuple[tuple[str, tuple[Any, ...]], ...] = ()  # (option, values), crossed
    published_source: str = ""
    published: dict[str, dict[str, float]] = field(default_factory=dict)  # layer -> column -> %
    expect: dict[str, dict[str, float]] = field(default_factory=dict)  # layer -> column -> least accuracy
    note: str = ""
    at_point: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)  # layer -> sweep label -> overrides

    def overrides(self, layer: str, label: str, sweep: list[str]) -> list[str]:
        """A cell's overrides: the layer's own, the sweep point's value, the layer's own at that point."""
        return [*self.layers[layer], *sweep, *self.at_point.get(layer, {}).get(label, ())]

    def variants(self) -> list[tuple[str, list[str]]]:
        """(label, overrides) per point of the sweep: ``[("", [])]`` without one."""
        return _sweep_points(self.sweep) if self.sweep else [("", [])]


def _sweep_points(sweep: tuple[tuple[str, tuple[Any, ...]], ...]) -> list[tuple[str, list[str]]]:
    """(label, overrides) per point of a sweep, its options crossed: ("d_model=32", ["d_model=32"])."""
    keys = [k for k, _ in sweep]
    out = []
    for values in itertools.product(*(v for _, v in sweep)):
        label = ",".join(f"{k}={v}" for k, v in zip(keys, values))
        out.append((label, [f"{k}={json.dumps(v)}" for k, v in zip(keys, values)]))
    return out


def _overrides(where: str, opts: Any) -> tuple[str, ...]:
    if opts is None:
        return ()
    if not isinstance(opts, dict):
        raise ConfigError(f"{where}: a layer's entry must be a mapping of run options (key: value), got {opts!r}")
    return tuple(f"{k}={json.dumps(v)}" for k, v in opts.items())


def _per_layer(where: str, data: Any, layers: dict, scalar_ok: bool) -> dict[str, dict[str, float]]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must map layers to values, got {data!r}")
    out = {}
    for layer, v in data.items():
        if layer not in layers:
            raise ConfigError(f"{where}: layer {layer!r} is not among this task's layers "
                              f"({', '.join(layers)}).{closest_hint(layer, layers)}")
        if isinstance(v, dict):
            out[layer] = {str(k): float(x) for k, x in v.items()}
        elif scalar_ok and isinstance(v, (int, float)) and not isinstance(v, bool):
            out[layer] = {"test": float(v)}
        else:
            raise ConfigError(f"{where}.{layer} must be a number or a mapping column -> number, got {v!r}")
    return out


def load_spec(preset: str) -> dict[str, TaskSpec] | None:
    """The tasks of ``configs/presets/<preset>/suite.yaml`` in file order (None without one)."""
    from seqzoo.registry import get_layer
    from seqzoo.tasks import get_task

    path = configs_dir() / "presets" / preset / "suite.yaml"
    if not path.is_file():
        return None
    data = load_yaml(path)
    out = {}
    for task, t in data.items():
        where = f"{path}: {task}"
        get_task(task)  # unknown task -> the registered ones
        if not isinstance(t, dict) or "layers" not in t:
            raise ConfigError(f"{where} must be a mapping with at least 'layers'")
        bad = [k for k in t if k not in _KEYS]
        if bad:
            raise ConfigError(f"{where}: unknown key {bad[0]!r}.{closest_hint(bad[0], _KEYS)} Valid keys: {', '.join(_KEYS)}")
        layers = t["layers"]
        if isinstance(layers, list):
            layers = {name: {} for name in layers}
        if not isinstance(layers, dict) or not layers:
            raise ConfigError(f"{where}.layers must be a list of layers or a mapping layer -> options")
        for name in layers:
            get_layer(name)  # unknown layer -> the registered ones
        sweep = t.get("sweep") or {}
        if not isinstance(sweep, dict) or not all(isinstance(v, list) and v for v in sweep.values()):
            raise ConfigError(f"{where}.sweep must map an option to a non-empty list of values, got {sweep!r}")
        published = t.get("published") or {}
        if not isinstance(published, dict) or (published and "source" not in published):
            raise ConfigError(f"{where}.published must have a 'source' (paper, table or figure) and 'values'")
        sweep = tuple((str(k), tuple(v)) for k, v in sweep.items())
        labels = [label for label, _ in _sweep_points(sweep)] if sweep else []
        own, at_point = {}, {}
        for name, opts in layers.items():
            points = {k: v for k, v in opts.items() if "=" in str(k)} if isinstance(opts, dict) else {}
            for label, v in points.items():
                if label not in labels:
                    raise ConfigError(f"{where}.layers.{name}: {label!r} is not a point of this task's sweep "
                                      f"({', '.join(labels) or 'none'}).{closest_hint(label, labels)}")
                at_point.setdefault(name, {})[label] = _overrides(f"{where}.layers.{name}.{label}", v)
            rest = {k: v for k, v in opts.items() if k not in points} if isinstance(opts, dict) else opts
            own[name] = _overrides(f"{where}.layers.{name}", rest)
        out[task] = TaskSpec(
            task=task, title=str(t.get("title", task)),
            layers=own, at_point=at_point,
            sweep=sweep,
            published_source=str(published.get("source", "")),
            published=_per_layer(f"{where}.published.values", published.get("values"), layers, scalar_ok=True),
            expect=_per_layer(f"{where}.expect", t.get("expect"), layers, scalar_ok=True),
            note=str(t.get("note", "")),
        )
    return out


def columns_of(result: dict[str, Any], variant: str) -> dict[str, float]:
    """A finished run's test accuracy per column (see the module docstring)."""
    if variant:
        return {variant: result["value"]}
    at = result.get("test_at_length") or {}
    if not at:
        return {"test": result["value"]}
    train_len, test_len = result["seq_len"]["train"], result["seq_len"]["test"]
    cols = {f"{test_len / train_len:g}x": result["value"]}
    for n, r in sorted(at.items(), key=lambda kv: int(kv[0])):
        cols[f"{int(n) / train_len:g}x"] = r["value"]
    return cols
