"""The benchmark suite (``seqzoo bench lra``): layers x tasks under a preset, results as
JSON lines, Markdown tables and a PNG.

    from seqzoo.train.suite import run_suite
    summary = run_suite("quick", out="runs/bench/lra-quick")   # every layer x every task

1. Every cell's config is composed and validated first (a bad name or option fails before
   any work).
2. Each task's splits are generated once (in this process, with all CPUs) and cached;
   every layer then reads the same data.
3. Cells run in a pool of ``jobs`` processes with ``threads`` torch threads each (the
   small models of the quick preset run best one thread per process), the longest first.
   A cell whose ``result.json`` already exists with the same config is not run again, so
   an interrupted suite continues where it stopped.
4. ``results.jsonl`` gets one line per cell; ``results.md`` holds the table (metric per
   layer x task, ✓ where the model beat chance, the chance row) and, for the full preset,
   our LRA numbers beside the published ones; ``accuracy.png`` is the heatmap.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import resource
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqzoo.config import ConfigError
from seqzoo.train.config import RunConfig, compose, resolve
from seqzoo.train.loop import same_config
from seqzoo.train.published import LAYER_TO_MODEL, LRA_TASKS, PUBLISHED, ROWS
from seqzoo.train.spec import load_spec

__all__ = ["Cell", "plan_suite", "step_cost", "run_suite", "results_table", "published_table", "plot_results", "SuiteSummary"]


@dataclass(frozen=True)
class Cell:
    layer: str
    task: str
    config: RunConfig
    variant: str = ""  # the point of a preset's sweep ("d_model=64"), if any

    @property
    def name(self) -> str:
        return f"{self.task}/{self.layer}" + (f"/{self.variant}" if self.variant else "")

    def cost(self) -> float:
        """A rough work estimate (tokens seen), to start the longest cells first."""
        c = self.config
        info = resolve(c).info
        return c.steps * c.batch_size * info.seq_len * (2 if info.is_pair else 1) * c.n_layers * c.d_model


@dataclass
class SuiteSummary:
    preset: str
    out: Path
    results: list[dict[str, Any]]
    wall_s: float
    cpu_s: float
    table: str
    files: dict[str, Path] = field(default_factory=dict)


def plan_suite(preset: str, layers: Sequence[str] | None = None, tasks: Sequence[str] | None = None,
               overrides: Sequence[str] = ()) -> list[Cell]:
    """Every cell of the preset, composed and validated (nothing generated or built): each
    (layer, task), or, for a preset with a ``suite.yaml`` (:mod:`seqzoo.train.spec`), the
    layers, tuning and sweeps it lists per task. ``layers`` / ``tasks`` filter; ``overrides``
    apply to every cell, after the preset's own."""
    import seqzoo
    import seqzoo.tasks

    for name in layers or ():
        seqzoo.get_layer(name)
    for name in tasks or ():
        seqzoo.tasks.get_task(name)
    spec = load_spec(preset)
    if spec is None:
        layers = list(layers) if layers else seqzoo.list_layers()
        tasks = list(tasks) if tasks else seqzoo.tasks.list_tasks()
        return [Cell(layer, task, compose(task, layer, preset=preset, overrides=list(overrides)))
                for task in tasks for layer in layers]
    for what, asked, has in (("task", tasks, set(spec)), ("layer", layers, {n for t in spec.values() for n in t.layers})):
        missing = [n for n in asked or () if n not in has]
        if missing:
            raise ConfigError(f"preset {preset!r} runs no {what} {missing[0]!r}; its {what}s: {', '.join(sorted(has))}")
    cells = []
    for task, t in spec.items():
        if tasks and task not in tasks:
            continue
        for layer in t.layers:
            if layers and layer not in layers:
                continue
            for variant, sweep in t.variants():
                cfg = compose(task, layer, preset=preset, overrides=[*t.overrides(layer, variant, sweep), *overrides])
                cells.append(Cell(layer, task, cfg, variant))
    return cells


def step_cost(cell: Cell, steps: int = 4, data_root: str | Path | None = None) -> float:
    """Seconds per training step of ``cell`` on this machine (current torch threads): the real
    training loop on the cell's data for ``2 + steps`` steps, the mean of the last ``steps``
    (the first two warm up). Multiply by ``cell.config.steps`` for the training time of the
    cell (the validations and the final evaluation are not included)."""
    import dataclasses

    from seqzoo.train.loop import train

    if steps < 1:
        raise ValueError(f"step_cost: steps must be >= 1, got {steps}")
    c = cell.config
    small = {k: min(v or c.batch_size, c.batch_size) for k, v in (("val_size", c.val_size), ("test_size", c.test_size))}
    cfg = dataclasses.replace(c, steps=steps + 2, log_every=1, eval_every=0, eval_lengths=[], ckpt_every=0,
                              stop_at=None, **small)
    r = train(cfg, None, data_root=data_root, progress=False, log=lambda *a, **k: None, handle_signals=False)
    times = [h["time_s"] for h in r["history"]]
    return (times[-1] - times[1]) / steps


def _data_key(cfg: RunConfig) -> str:
    return json.dumps([cfg.task, cfg.task_options, cfg.train_size, cfg.val_size, cfg.test_size, cfg.pad_to_max],
                      sort_keys=True, default=str)


# ---------------------------------------------------------------------------- workers
_WORKER_DATA: dict[str, Any] = {}


def _init_worker(threads: int, data_root: str | None) -> None:
    import warnings

    import torch

    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore", message=".*compiled extension.*")
    if data_root is not None:
        os.environ["SEQZOO_DATA"] = data_root


def _run_cell(cell: Cell, run_dir: str, data_root: str | None) -> dict[str, Any]:
    """Train one cell (in a worker process or in-process); its data come from the cache."""
    from seqzoo.train.loop import build_datasets, train

    plan = resolve(cell.config)
    key = _data_key(cell.config)
    if key not in _WORKER_DATA:
        _WORKER_DATA.clear()  # cells run task by task: keep one task's splits at a time
        _WORKER_DATA[key] = build_datasets(plan, data_root, progress=False, workers=1)
    saved = Path(run_dir) / "config.json"
    same = saved.is_file() and same_config(json.loads(saved.read_text()), cell.config)
    t0, c0 = time.perf_counter(), time.process_time()
    result = train(plan, run_dir, datasets=_WORKER_DATA[key], progress=False, log=lambda *a, **k: None,
                   resume=same)  # an interrupted cell continues from its checkpoint; a changed one starts over
    result["cell_wall_s"] = round(time.perf_counter() - t0, 3)
    result["cell_cpu_s"] = round(time.process_time() - c0, 3)
    return result


def _previous(run_dir: Path, cfg: RunConfig) -> dict[str, Any] | None:
    f = run_dir / "result.json"
    if not f.is_file():
        return None
    try:
        result = json.loads(f.read_text())
    except ValueError:
        return None
    return result if same_config(result.get("config"), cfg) else None


def _cpu_seconds() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def run_suite(preset: str = "quick", out: str | Path | None = None, *, layers: Sequence[str] | None = None,
              tasks: Sequence[str] | None = None, overrides: Sequence[str] = (), jobs: int | None = None,
              threads: int = 1, data_root: str | Path | None = None, resume: bool = True, progress: bool = True,
              log: Callable[[str], None] = print) -> SuiteSummary:
    """Run the suite; return its summary (results, table, files, wall and CPU time)."""
    import torch

    t0, c0 = time.perf_counter(), _cpu_seconds()
    out = Path(out or f"runs/bench/lra-{preset}")
    cells = plan_suite(preset, layers, tasks, overrides)  # all validated before any work
    jobs = jobs or min(2, os.cpu_count() or 1)
    data_root = str(data_root) if data_root is not None else None
    out.mkdir(parents=True, exist_ok=True)
    log(f"seqzoo bench lra --preset {preset}: {len(cells)} runs "
        f"({len({c.layer for c in cells})} layers x {len({c.task for c in cells})} tasks), "
        f"{jobs} process(es) x {threads} thread(s), results in {out}")

    # 1. the data, once per task (cached; generation uses every CPU)
    from seqzoo.train.loop import build_datasets

    seen: set[str] = set()
    for cell in cells:
        key = _data_key(cell.config)
        if key in seen:
            continue
        seen.add(key)
        t = time.perf_counter()
        build_datasets(resolve(cell.config), data_root, progress=progress)
        log(f"data {cell.task}: ready in {time.perf_counter() - t:.1f}s")
    t_data = time.perf_counter() - t0

    # 2. the runs (the longest first), skipping cells already done with the same config
    results: dict[str, dict[str, Any]] = {}
    todo = []
    for cell in cells:
        prev = _previous(out / "runs" / cell.name, cell.config) if resume else None
        if prev is not None:
            results[cell.name] = {**prev, "variant": cell.variant}
        else:
            todo.append(cell)
    if len(todo) < len(cells):
        log(f"{len(cells) - len(todo)} run(s) already done in {out} (same config): reused")
    # longest first, but grouped so a worker keeps one task's data at a time where possible
    todo.sort(key=lambda c: -c.cost())
    jsonl = out / "results.jsonl"
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(cells), initial=len(cells) - len(todo), desc="bench lra", unit="run")

    def done(cell: Cell, result: dict[str, Any]) -> None:
        results[cell.name] = {**result, "variant": cell.variant}
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(f"{cell.name}: {result['value']:.3f}{' ✓' if result['beats_chance'] else ' ✗'}")

    if jobs == 1 or len(todo) <= 1:
        n_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            for cell in todo:
                done(cell, _run_cell(cell, str(out / "runs" / cell.name), data_root))
        finally:
            torch.set_num_threads(n_threads)
    else:
        ctx = mp.get_context("spawn")  # fresh interpreters: no forked thread pools or locks
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_worker,
                                 initargs=(threads, data_root)) as pool:
            futures = {pool.submit(_run_cell, cell, str(out / "runs" / cell.name), data_root): cell
                       for cell in todo}
            for fut in as_completed(futures):
                done(futures[fut], fut.result())
    if bar is not None:
        bar.close()

    ordered = [results[c.name] for c in cells]
    with open(jsonl, "w") as f:
        for r in ordered:
            f.write(json.dumps({k: v for k, v in r.items() if k != "history"}, default=str) + "\n")
    wall, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    header = (f"preset `{preset}`: {sum(r['beats_chance'] for r in ordered)}/{len(ordered)} runs above chance; "
              f"wall {wall:.0f} s (data {t_data:.0f} s), CPU {cpu:.0f} s, {jobs} process(es) x {threads} thread(s), "
              f"torch {torch.__version__}, {os.cpu_count()} CPUs")
    table = results_table(ordered)
    md = [f"# seqzoo bench lra: {preset}", "", header, "", table, ""]
    if preset == "full":  # other presets run at toy sizes: beside the published numbers they would mislead
        pub = published_table(ordered)
        if pub:
            md += ["## Beside the published LRA numbers", "", pub, ""]
    files = {"results.jsonl": jsonl, "results.md": out / "results.md"}
    spec = load_spec(preset)
    if spec is not None:  # a preset of papers' experiments: their findings beside ours, learning curves
        from seqzoo.train.findings import findings_report, plot_curves

        md += ["# The papers' findings", "", findings_report(ordered, spec)]
        curves = plot_curves(ordered, spec, out / "curves.png")
        if curves is not None:
            files["curves.png"] = curves
    (out / "results.md").write_text("\n".join(md))
    png = plot_results(ordered, out / "accuracy.png", title=f"seqzoo bench lra --preset {preset}")
    if png is not None:
        files["accuracy.png"] = png
    summary = {"preset": preset, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "data_s": round(t_data, 1),
               "jobs": jobs, "threads": threads, "runs": len(ordered),
               "above_chance": sum(r["beats_chance"] for r in ordered)}
    if spec is not None:
        from seqzoo.train.findings import finding_checks

        summary["findings"] = finding_checks(ordered, spec)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    files["summary.json"] = out / "summary.json"
    text = "\n".join([header, "", table] + (["", md[-1]] if spec is not None else []))
    return SuiteSummary(preset, out, ordered, wall, cpu, text, files)


# ---------------------------------------------------------------------------- tables and plots
def _fmt(r: dict[str, Any]) -> str:
    mark = "✓" if r["beats_chance"] else "✗"
    return f"{r['value']:.3f} {mark}"


def _column(r: dict[str, Any]) -> str:
    """A result's column in the suite's tables: its task, and the sweep point if any."""
    return r["task"] + (f" {r['variant']}" if r.get("variant") else "")


def results_table(results: list[dict[str, Any]]) -> str:
    """Markdown: one row per layer, one column per task (and sweep point; test metric,
    ✓ = above chance), then the chance level of each column's test split."""
    from seqzoo.timing import table

    layers = list(dict.fromkeys(r["layer"] for r in results))
    tasks = list(dict.fromkeys(_column(r) for r in results))
    by = {(r["layer"], _column(r)): r for r in results}
    head = ["layer"]
    for t in tasks:
        r = next(by[k] for k in by if k[1] == t)
        head.append(f"{t} ({'MSE ↓' if r['metric'] == 'mse' else 'acc'}, L={r['seq_len']['test']})")
    rows = []
    for layer in layers:
        rows.append((layer, *[_fmt(by[(layer, t)]) if (layer, t) in by else "" for t in tasks]))
    chance = ["chance"]
    for t in tasks:
        r = next(by[k] for k in by if k[1] == t)
        chance.append(f"{r['chance']:.3f}")
    rows.append(tuple(chance))
    return table(tuple(head), rows) + (
        "\n\nTest split. ✓: beats chance by more than two standard errors of a chance-level predictor "
        "(chance: majority-class rate for class targets, 1/n_classes for per-position targets, the "
        "target's variance for MSE).")


def published_table(results: list[dict[str, Any]]) -> str:
    """Markdown: ours (test accuracy, %) / published, for the layers and LRA tasks we ran;
    each published row's paper and table, and the recipe each of our rows ran."""
    from seqzoo.timing import table

    ran = [(t, LRA_TASKS[t]) for t in dict.fromkeys(r["task"] for r in results) if t in LRA_TASKS]
    if not ran:
        return ""
    by = {(r["layer"], r["task"]): r for r in results}
    head = ["layer (published row)", *[f"{col}: `{t}` ({kind})" for t, (col, kind, _) in ran]]
    rows = []
    for layer in dict.fromkeys(r["layer"] for r in results):
        model = LAYER_TO_MODEL.get(layer)
        cells = []
        for t, (col, _, _) in ran:
            ours = f"{100 * by[(layer, t)]['value']:.1f}" if (layer, t) in by else "–"
            pub = PUBLISHED[model].get(col) if model else None
            pub_s = "" if model is None else (" / FAIL" if pub is None else f" / {pub:.2f}")
            cells.append(ours + pub_s)
        recipes = sorted({str((by[(layer, t)].get("config") or {}).get("recipe", "common"))
                          for t, _ in ran if (layer, t) in by})
        label = layer + (f" ({model})" if model else "") + (f", recipe {'/'.join(recipes)}" if recipes else "")
        rows.append((label, *cells))
    notes = [f"- `{t}`: {kind}, {what}." for t, (_, kind, what) in ran]
    notes += [f"- {r.model}: {r.source}. Checked: {r.checked}." for r in ROWS]
    return (table(tuple(head), rows) + "\n\nOurs / published (test accuracy, %). Faithful: generated to LRA's "
            "construction (new samples of the same distribution); substitute: a different data set standing in "
            "for one we cannot download, so the numbers are not comparable. Recipe: the settings our run "
            "followed (configs/recipes/<recipe>/, or the common one in configs/lra/).\n\n" + "\n".join(notes))


def plot_results(results: list[dict[str, Any]], path: str | Path, title: str = "") -> Path | None:
    """Heatmap of the normalised score per layer x task (0 = chance, 1 = perfect; R² for
    MSE), annotated with the test metric; ✗ where the model did not beat chance."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    import numpy as np

    layers = list(dict.fromkeys(r["layer"] for r in results))
    tasks = list(dict.fromkeys(_column(r) for r in results))
    by = {(r["layer"], _column(r)): r for r in results}
    score = np.full((len(layers), len(tasks)), np.nan)
    for i, layer in enumerate(layers):
        for j, t in enumerate(tasks):
            if (layer, t) in by:
                score[i, j] = by[(layer, t)]["test"]["normalised"]
    fig, ax = plt.subplots(figsize=(1.1 * len(tasks) + 2.5, 0.45 * len(layers) + 1.8))
    im = ax.imshow(np.clip(score, -0.2, 1.0), cmap="viridis", vmin=-0.2, vmax=1.0, aspect="auto")
    for i, layer in enumerate(layers):
        for j, t in enumerate(tasks):
            r = by.get((layer, t))
            if r is None:
                continue
            text = f"{r['value']:.2f}" + ("" if r["beats_chance"] else "✗")
            ax.text(j, i, text, ha="center", va="center", fontsize=7,
                    color="white" if (np.isnan(score[i, j]) or score[i, j] < 0.5) else "black")
    ax.set_xticks(range(len(tasks)), [t + (" (mse)" if by[(layers[0], t)]["metric"] == "mse" else "")
                                      if (layers[0], t) in by else t for t in tasks], rotation=40, ha="right")
    ax.set_yticks(range(len(layers)), layers)
    fig.colorbar(im, ax=ax, label="(score - chance) / (best - chance)")
    ax.set_title(title + "\n(test metric; ✗: not above chance)", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
