"""The report of a preset that reproduces papers' findings (a ``suite.yaml`` preset, see
:mod:`seqzoo.train.spec`): per task, our test accuracy beside the published one, whether
the finding the preset expects held, our settings and theirs, and a learning-curve plot.

    from seqzoo.train.findings import findings_report, plot_curves
    md = findings_report(results, load_spec("papers"))     # results: the suite's result dicts
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from seqzoo.train.spec import TaskSpec, columns_of

__all__ = ["findings_report", "finding_checks", "plot_curves"]


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _ours(results: list[dict[str, Any]], task: str) -> dict[str, dict[str, float]]:
    """layer -> column -> our test accuracy (0-1)."""
    out: dict[str, dict[str, float]] = {}
    for r in results:
        if r["task"] == task:
            out.setdefault(r["layer"], {}).update(columns_of(r, r.get("variant", "")))
    return out


def finding_checks(results: list[dict[str, Any]], spec: dict[str, TaskSpec]) -> list[dict[str, Any]]:
    """Every expectation of the spec against the results that ran: task, layer, column,
    the least accuracy expected, ours, and whether it held (None: not run)."""
    checks = []
    for task, t in spec.items():
        ours = _ours(results, task)
        for layer, cols in t.expect.items():
            for col, least in cols.items():
                got = ours.get(layer, {}).get(col)
                checks.append({"task": task, "layer": layer, "column": col, "expect": least, "ours": got,
                               "held": None if got is None else got >= least})
    return checks


def _settings(results: list[dict[str, Any]], task: str) -> str:
    """Our settings in one line, from the runs' configs (a/b where the layers differ)."""
    cfgs = [r["config"] for r in results if r["task"] == task]
    r0 = next(r for r in results if r["task"] == task)
    parts = [f"trained at L={r0['seq_len']['train']}"]
    for key, label in (("n_layers", "layers"), ("d_model", "d_model"), ("steps", "steps"), ("batch_size", "batch"),
                       ("lr", "lr")):
        parts.append(f"{label} {'/'.join(str(v) for v in sorted({c[key] for c in cfgs}, key=float))}")
    opts = cfgs[0].get("task_options", {})
    if opts:
        parts.append("task " + ", ".join(f"{k}={v}" for k, v in opts.items()))
    return "; ".join(parts)


def findings_report(results: list[dict[str, Any]], spec: dict[str, TaskSpec]) -> str:
    """Markdown, one section per task of the spec that ran: ours / published per column."""
    from seqzoo.timing import table

    checks = {(c["task"], c["layer"], c["column"]): c for c in finding_checks(results, spec)}
    parts = []
    for task, t in spec.items():
        ours = _ours(results, task)
        if not ours:
            continue
        cols = list(dict.fromkeys(c for layer in ours for c in ours[layer]))
        head = ["layer", *[f"{c}: ours / paper" if len(cols) > 1 else "ours / paper" for c in cols], "finding"]
        rows = []
        for layer in t.layers:
            if layer not in ours:
                continue
            cells = []
            for c in cols:
                pub = t.published.get(layer, {}).get(c)
                cells.append(f"{_pct(ours[layer].get(c))} / {pub:.1f}" if pub is not None else _pct(ours[layer].get(c)))
            verdicts = [checks[(task, layer, c)] for c in t.expect.get(layer, {}) if (task, layer, c) in checks]
            finding = "; ".join(f"{'✓' if v['held'] else '✗'} ≥ {100 * v['expect']:g} at {v['column']}"
                                for v in verdicts if v["held"] is not None) or ""
            rows.append((layer, *cells, finding))
        parts.append(f"## {t.title}\n\n" + (f"{t.note}\n\n" if t.note else "") + table(tuple(head), rows) + "\n\n"
                     f"Test accuracy, %. Ours: {_settings(results, task)}. Paper: {t.published_source or 'none'}.\n")
    return "\n".join(parts)


def plot_curves(results: list[dict[str, Any]], spec: dict[str, TaskSpec], path: str | Path) -> Path | None:
    """One panel per task: validation accuracy against the training step, one line per
    layer (and sweep point), from the runs' periodic evaluations."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    tasks = [t for t in spec if any(r["task"] == t and r.get("evals") for r in results)]
    if not tasks:
        return None
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for r in results:
            if r["task"] != task or not r.get("evals"):
                continue
            steps = [0] + [e["step"] for e in r["evals"]]
            values = [r["evals"][0].get("chance", 0.0)] + [e["value"] for e in r["evals"]]
            label = r["layer"] + (f" {r['variant']}" if r.get("variant") else "")
            ax.plot(steps, values, marker=".", label=label)
        ax.set_title(spec[task].title, fontsize=8)
        ax.set_xlabel("step")
        ax.set_ylabel("validation accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
