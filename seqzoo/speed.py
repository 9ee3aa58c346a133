"""Parallel vs recurrent inference of every layer: ``seqzoo bench modes``, ``seqzoo bench speed``
and ``seqzoo bench decode``, on a CPU or a GPU (``device``).

- :func:`compare_modes`: for each layer, one sequence through the parallel form and
  through the step loop: the outputs' max difference, time and peak memory of each mode
  for the whole sequence, and the per-token latency when streaming (one ``step`` at the
  end of the sequence).
- :func:`speed_sweep`: time and peak memory against the length L for both modes, and
  step latency against the position (the state after a prefill of that many tokens).
- :func:`decode_sweep`: a full language model (``n_layers`` blocks) per layer at contexts
  of 1k to 64k tokens: prefill tokens/s (parallel form over the prompt), decode latency per
  token and tokens/s (recurrent form, :class:`seqzoo.models.generate.Decoder`: eager, or on
  a GPU replayed from a CUDA graph), and the bytes of the state the decoder carries: a
  constant for the recurrent layers, attention's KV cache growing with the context.

Times are medians of interleaved repeats and memory the peak extra bytes while a call runs
(:mod:`seqzoo.timing`; on a GPU each call ends with a synchronisation), measured after all
timings with the allocator set to count live tensors (:func:`seqzoo.timing.exact_cpu_memory`);
the machine is noisy, so compare within one run. Inference only (``torch.inference_mode``,
eval mode), float32, random inputs.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from seqzoo.timing import exact_cpu_memory, median_times, peak_memory, table

__all__ = ["build_layer", "layer_options", "step_loop", "compare_modes", "speed_sweep", "decode_sweep", "modes_table",
           "speed_tables", "decode_table", "plot_modes", "plot_speed", "plot_decode"]


def layer_options(name: str, length: int, **options: Any) -> dict[str, Any]:
    """``options`` plus ``l_max`` set to ``length`` where the layer has one (at least
    ``d_state + 1``): the layer's defaults, sized for sequences of ``length``."""
    import seqzoo

    fields = {f.name: f for f in dataclasses.fields(seqzoo.get_layer(name).config)}
    if "l_max" in fields and "l_max" not in options:
        d_state = options.get("d_state", fields["d_state"].default if "d_state" in fields else 0)
        options["l_max"] = max(length, d_state + 1)  # RTF's kernel needs more taps than the state
    return options


def build_layer(name: str, d_model: int, length: int, **options: Any):
    """A registered layer with its default options (:func:`layer_options`), in eval mode."""
    import seqzoo

    return seqzoo.build(name, d_model=d_model, **layer_options(name, length, **options)).eval()


def _synced(fns: dict[str, Callable[[], Any]], device: torch.device) -> dict[str, Callable[[], Any]]:
    """On a GPU, each call waits for its kernels (a timing would otherwise see the launch)."""
    if device.type != "cuda":
        return fns

    def wrap(fn):
        def run():
            out = fn()
            torch.cuda.synchronize(device)
            return out

        return run

    return {k: wrap(f) for k, f in fns.items()}


def step_loop(layer, x: torch.Tensor, state=None) -> tuple[torch.Tensor, Any]:
    """The recurrent form over a whole sequence: x (B, L, D) -> (y (B, L, D), state)."""
    if state is None:
        state = layer.init_state(x.shape[0], device=x.device, dtype=x.dtype)
    out = []
    for t in range(x.shape[1]):
        y_t, state = layer.step(x[:, t], state)
        out.append(y_t)
    return torch.stack(out, 1), state


def _mb(n: int) -> float:
    return n / 2**20 if n >= 0 else float("nan")


def compare_modes(layers: Sequence[str] | None = None, *, d_model: int = 64, length: int = 1024, batch: int = 1,
                  repeats: int = 3, seed: int = 0, progress: bool = True,
                  device: torch.device | str = "cpu") -> list[dict[str, Any]]:
    """One row per layer: max difference, time and memory of each mode, step latency."""
    import seqzoo

    device = torch.device(device)
    layers = list(layers) if layers else seqzoo.list_layers()
    rows = []
    it = layers
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(layers, desc="bench modes", unit="layer")
    memory = []  # (row, {column: fn}) measured after every timing (see _memory_pass)
    for name in it:
        torch.manual_seed(seed)
        layer = build_layer(name, d_model, length).to(device)
        x = torch.randn(batch, length, d_model, device=device)
        row, fns = _modes_row(layer, x, repeats)
        rows.append({"layer": name, "d_model": d_model, "length": length, "batch": batch, "device": device.type, **row})
        memory.append((rows[-1], fns))
    _memory_pass(memory, device)
    return rows


def _memory_pass(work: list[tuple[dict[str, Any], dict[str, Callable[[], Any]]]],
                 device: torch.device | str = "cpu") -> None:
    """Peak memory of every (row, column) after all timings: exact_cpu_memory() switches the
    allocator to a mode that counts live tensors but slows allocation, so it comes last."""
    device = torch.device(device)
    if device.type == "cpu":
        exact_cpu_memory()
    with torch.inference_mode():
        for row, fns in work:
            for column, fn in fns.items():
                row[column] = _mb(peak_memory(fn, device))


@torch.inference_mode()
def _modes_row(layer, x: torch.Tensor, repeats: int) -> tuple[dict[str, Any], dict[str, Callable[[], Any]]]:
    y_par, _ = layer(x)
    if not layer.can_step():
        return ({"can_step": False, "why": layer.step_disabled_reason(),
                 "parallel_s": median_times(_synced({"p": lambda: layer(x)}, x.device), repeats=repeats)["p"]},
                {"parallel_mb": lambda: layer(x)})
    y_rec, _ = step_loop(layer, x)  # also the warm-up of the timed loop
    times = median_times(_synced({"parallel": lambda: layer(x), "recurrent": lambda: step_loop(layer, x)}, x.device),
                         repeats=repeats, warmup=0)
    _, state = layer(x[:, :-1])
    x_t = x[:, -1]
    diff = (y_par - y_rec).abs().max()
    step = _synced({"step": lambda: layer.step(x_t, state)}, x.device)
    row = {
        "can_step": True,
        "max_abs_diff": float(diff),
        "max_rel_diff": float(diff / y_par.abs().max().clamp(min=1e-30)),
        "parallel_s": times["parallel"], "recurrent_s": times["recurrent"],
        "step_latency_s": median_times(step, repeats=max(21, repeats))["step"],
    }
    return row, {"parallel_mb": lambda: layer(x), "recurrent_mb": lambda: step_loop(layer, x)}


def modes_table(rows: list[dict[str, Any]]) -> str:
    head = ("layer", "max abs diff", "max rel diff", "parallel ms", "recurrent ms", "rec / par", "parallel MB",
            "recurrent MB", f"step µs (at t={rows[0]['length'] - 1})" if rows else "step µs")
    out = []
    for r in rows:
        if not r.get("can_step"):
            out.append((r["layer"], "n/a", "n/a", f"{1e3 * r['parallel_s']:.2f}", "n/a", "n/a",
                        f"{r['parallel_mb']:.1f}", "n/a", "n/a"))
            continue
        out.append((r["layer"], f"{r['max_abs_diff']:.1e}", f"{r['max_rel_diff']:.1e}", f"{1e3 * r['parallel_s']:.2f}",
                    f"{1e3 * r['recurrent_s']:.1f}", f"{r['recurrent_s'] / r['parallel_s']:.0f}x",
                    f"{r['parallel_mb']:.1f}", f"{r['recurrent_mb']:.1f}", f"{1e6 * r['step_latency_s']:.0f}"))
    return table(head, out)


def speed_sweep(layers: Sequence[str] | None = None, *, d_model: int = 64, lengths: Sequence[int] = (256, 1024, 4096),
                positions: Sequence[int] = (1, 256, 1024, 4096), batch: int = 1, repeats: int = 3,
                max_recurrent_length: int = 4096, seed: int = 0, progress: bool = True,
                device: torch.device | str = "cpu") -> list[dict[str, Any]]:
    """Rows ``{"layer", "kind": "length" | "position", ...}``: per (layer, L) the time and
    peak memory of the parallel form and of the step loop over L tokens (the step loop only
    up to ``max_recurrent_length``); per (layer, position) the latency of one step after a
    prefill of ``position`` tokens."""
    import seqzoo

    device = torch.device(device)
    layers = list(layers) if layers else seqzoo.list_layers()
    rows: list[dict[str, Any]] = []
    L_max = max([*lengths, *positions])
    work = [(n, "length", L) for n in layers for L in lengths] + [(n, "position", p) for n in layers for p in positions]
    it = work
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(work, desc="bench speed", unit="point")
    built: dict[str, Any] = {}
    memory = []
    for name, kind, n in it:
        if name not in built:
            torch.manual_seed(seed)
            built = {name: build_layer(name, d_model, L_max).to(device)}
        layer = built[name]
        row: dict[str, Any] = {"layer": name, "kind": kind, "d_model": d_model, "batch": batch, "device": device.type}
        if kind == "length":
            point, fns = _length_point(layer, n, batch, d_model, repeats, max_recurrent_length)
            row.update(point)
            memory.append((row, fns))
        elif layer.can_step():
            row.update(_position_point(layer, n, batch, d_model, repeats))
        else:
            continue
        rows.append(row)
    _memory_pass(memory, device)
    return rows


@torch.inference_mode()
def _length_point(layer, n: int, batch: int, d_model: int, repeats: int,
                  max_recurrent_length: int) -> tuple[dict[str, Any], dict[str, Callable[[], Any]]]:
    device = next(layer.parameters()).device
    x = torch.randn(batch, n, d_model, device=device)
    fns: dict[str, Callable[[], Any]] = {"parallel": lambda: layer(x, return_state=False)}
    if layer.can_step() and n <= max_recurrent_length:
        fns["recurrent"] = lambda: step_loop(layer, x)
    times = median_times(_synced(fns, device), repeats=repeats if n < 4096 else max(1, repeats // 2), warmup=1)
    return {"length": n, **{f"{k}_s": v for k, v in times.items()}}, {f"{k}_mb": f for k, f in fns.items()}


@torch.inference_mode()
def _position_point(layer, n: int, batch: int, d_model: int, repeats: int) -> dict[str, Any]:
    device = next(layer.parameters()).device
    x = torch.randn(batch, n + 1, d_model, device=device)
    state = layer(x[:, :n])[1] if n > 0 else layer.init_state(batch, device=device)
    x_t = x[:, n]
    step = _synced({"s": lambda: layer.step(x_t, state)}, device)
    return {"position": n, "step_s": median_times(step, repeats=max(21, repeats))["s"]}


def speed_tables(rows: list[dict[str, Any]]) -> str:
    by_len = [r for r in rows if r["kind"] == "length"]
    by_pos = [r for r in rows if r["kind"] == "position"]
    t1 = table(("layer", "L", "parallel ms", "recurrent ms", "rec / par", "parallel MB", "recurrent MB"),
               [(r["layer"], r["length"], f"{1e3 * r['parallel_s']:.2f}",
                 f"{1e3 * r['recurrent_s']:.1f}" if "recurrent_s" in r else "–",
                 f"{r['recurrent_s'] / r['parallel_s']:.0f}x" if "recurrent_s" in r else "–",
                 f"{r['parallel_mb']:.1f}", f"{r['recurrent_mb']:.1f}" if "recurrent_mb" in r else "–")
                for r in by_len])
    positions = sorted({r["position"] for r in by_pos})
    layers = list(dict.fromkeys(r["layer"] for r in by_pos))
    lat = {(r["layer"], r["position"]): r["step_s"] for r in by_pos}
    t2 = table(("layer", *[f"step µs at t={p}" for p in positions]),
               [(n, *[f"{1e6 * lat[(n, p)]:.0f}" if (n, p) in lat else "–" for p in positions]) for n in layers])
    return t1 + "\n\n" + t2


def decode_sweep(layers: Sequence[str] | None = None, *, d_model: int = 256, n_layers: int = 4,
                 contexts: Sequence[int] = (1024, 4096, 16384), new_tokens: int = 32, batch: int = 1,
                 vocab_size: int = 256, device: torch.device | str = "cpu", mode: str = "auto", repeats: int = 5,
                 seed: int = 0, progress: bool = True, mlp_ratio: float = 2.0) -> list[dict[str, Any]]:
    """One row per (layer, context): an ``n_layers``-block language model around the layer
    (default options, ``l_max`` = the longest context), a random prompt of ``context``
    tokens. ``prefill_s``: the parallel form over the prompt (:func:`~seqzoo.models.generate.prefill`);
    ``decode_s``: the median time per token of ``new_tokens`` greedy steps from that state
    (``repeats`` runs, interleaved across the contexts so that load on a shared machine hits
    them alike); ``state_bytes``: the state the decoder carries after the prompt;
    ``param_bytes``: the model's weights, which a batch-1 step reads once per token (on a CPU
    that read, not the arithmetic, bounds the per-token time). ``mlp_ratio``: the blocks'
    MLP (0: none, the Mamba language model's layout).
    ``mode``: the :class:`~seqzoo.models.generate.Decoder` mode; "auto" is "eager" on a CPU
    and "cuda_graph" on a GPU, except for layers whose state grows (attention's KV cache:
    "eager")."""
    import seqzoo

    device = torch.device(device)
    if layers:
        names = list(layers)
    else:  # every layer whose default options have a recurrent form
        names = [n for n in seqzoo.list_layers() if seqzoo.build(n, d_model=8, **layer_options(n, 8)).can_step()]
    it = names
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(names, desc="bench decode", unit="layer")
    rows: list[dict[str, Any]] = []
    for name in it:
        torch.manual_seed(seed)
        model = seqzoo.build_model(name, d_model=d_model, n_layers=n_layers, vocab_size=vocab_size, head="lm",
                                   mlp_ratio=mlp_ratio, layer_options=layer_options(name, max(contexts))).to(device).eval()
        grows = any(m.state_grows for m in model.mixers)
        how = mode if mode != "auto" else ("cuda_graph" if device.type == "cuda" and not grows else "eager")
        base = {"layer": name, "device": device.type, "mode": how, "d_model": d_model, "n_layers": n_layers,
                "mlp_ratio": mlp_ratio, "batch": batch, "new_tokens": new_tokens,
                "param_bytes": sum(p.numel() * p.element_size() for p in model.parameters())}
        points = _decode_points(model, how, contexts, batch, vocab_size, new_tokens, repeats)
        rows += [{**base, "context": c, **points[c]} for c in contexts]
    return rows


@torch.inference_mode()
def _decode_points(model, mode: str, contexts: Sequence[int], batch: int, vocab_size: int, new_tokens: int,
                   repeats: int) -> dict[int, dict[str, Any]]:
    """Prefill each context (timed), then time decoding from every context's state, interleaved."""
    from seqzoo.models.generate import Decoder, prefill

    device = next(model.parameters()).device
    prefill(model, torch.randint(0, vocab_size, (batch, 16), device=device))  # first-call work is not timed
    out: dict[int, dict[str, Any]] = {}
    live: dict[int, list] = {}  # context -> [decoder, token, state]
    for c in contexts:
        prompt = torch.randint(0, vocab_size, (batch, c), device=device)
        res: dict[str, Any] = {}

        def run_prefill(res=res, prompt=prompt):
            res.update(zip(("logits", "state"), prefill(model, prompt)))

        t = median_times(_synced({"p": run_prefill}, device), repeats=1 if c >= 8192 else 3, warmup=0)["p"]
        state = res["state"]
        nbytes = sum(t_.numel() * t_.element_size() for s in state for t_ in s if isinstance(t_, torch.Tensor))
        out[c] = {"prefill_s": t, "prefill_tok_s": batch * c / t, "state_bytes": nbytes}
        decoder = Decoder(model, mode)  # one per context: a CUDA graph's buffers hold one state
        tok = res["logits"].argmax(-1)
        for _ in range(3):  # warm-up (and, for "cuda_graph", the capture)
            logits, state = decoder(tok, state)
            tok = logits.argmax(-1)
        live[c] = [decoder, tok, state]

    def run(c):
        def decode():
            decoder, tok, state = live[c]
            for _ in range(new_tokens):
                logits, state = decoder(tok, state)
                tok = logits.argmax(-1)
            live[c][1:] = [tok, state]

        return decode

    mats = _step_matrices(model)
    xs = {k: torch.randn(batch, k, device=device) for k in {w.shape[1] for w in mats}}

    def read_weights():  # what a step cannot beat: one BLAS matrix-vector pass over its weights
        for _ in range(new_tokens):
            for w in mats:
                torch.nn.functional.linear(xs[w.shape[1]], w)

    fns = {c: run(c) for c in contexts} | {"floor": read_weights}
    times = median_times(_synced(fns, device), repeats=repeats, warmup=1)
    for c in contexts:
        out[c].update(decode_s=times[c] / new_tokens, decode_tok_s=batch * new_tokens / times[c],
                      read_floor_s=times["floor"] / new_tokens)
    return out


def _step_matrices(model) -> list[torch.Tensor]:
    """The weight matrices a batch-1 step reads whole (as 2-D (out, in)): every parameter
    with two or more dimensions, except embedding tables that are only gathered from (a tied
    LM head reads its table whole: it stays)."""
    from torch import nn

    linear = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    gathered = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)} - linear
    return [p.detach().reshape(p.shape[0], -1) for p in model.parameters() if p.dim() >= 2 and id(p) not in gathered]


def decode_table(rows: list[dict[str, Any]]) -> str:
    """Per layer and context: prefill tokens/s, decode ms/token and tokens/s, state MB; and
    the growth of the per-token time from the shortest to the longest context."""
    contexts = sorted({r["context"] for r in rows})
    by = {(r["layer"], r["context"]): r for r in rows}
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    t1 = table(("layer", "context", "mode", "prefill tok/s", "decode ms/token", "decode tok/s", "state MB", "weights MB",
                "weight-read ms"),
               [(r["layer"], r["context"], r["mode"], f"{r['prefill_tok_s']:,.0f}", f"{1e3 * r['decode_s']:.3f}",
                 f"{r['decode_tok_s']:,.0f}", f"{r['state_bytes'] / 2**20:.3g}",
                 f"{r['param_bytes'] / 2**20:.3g}" if "param_bytes" in r else "–",
                 f"{1e3 * r['read_floor_s']:.3f}" if "read_floor_s" in r else "–") for r in rows])
    lo, hi = contexts[0], contexts[-1]
    t2 = table(("layer", *[f"ms/token at {c}" for c in contexts], f"{hi} / {lo}"),
               [(n, *[f"{1e3 * by[(n, c)]['decode_s']:.3f}" if (n, c) in by else "–" for c in contexts],
                 f"{by[(n, hi)]['decode_s'] / by[(n, lo)]['decode_s']:.2f}x" if (n, lo) in by and (n, hi) in by else "–")
                for n in layers])
    return t1 + "\n\n" + t2


def plot_decode(rows: list[dict[str, Any]], path: str | Path) -> Path | None:
    """Three panels against the context: decode ms per token, prefill tokens/s, state MB."""
    plt = _plt()
    if plt is None:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    colors = plt.get_cmap("tab20").colors
    for i, name in enumerate(layers):
        c = colors[(2 * i) % 20 + (2 * i) // 20 % 2]
        pts = sorted((r for r in rows if r["layer"] == name), key=lambda r: r["context"])
        ctx = [r["context"] for r in pts]
        axes[0].plot(ctx, [1e3 * r["decode_s"] for r in pts], color=c, marker="o", ms=3, label=name)
        axes[1].plot(ctx, [r["prefill_tok_s"] for r in pts], color=c, marker="o", ms=3)
        axes[2].plot(ctx, [r["state_bytes"] / 2**20 for r in pts], color=c, marker="o", ms=3)
    r0 = rows[0] if rows else {}
    where = f"{r0.get('device', '')}, {r0.get('n_layers', '')} layers, d_model={r0.get('d_model', '')}, B={r0.get('batch', '')}"
    axes[0].set(xscale="log", yscale="log", xlabel="context (tokens before the step)", ylabel="ms per token",
                title=f"decode latency ({where})")
    axes[1].set(xscale="log", yscale="log", xlabel="prompt length", ylabel="tokens/s", title="prefill throughput")
    axes[2].set(xscale="log", yscale="log", xlabel="context", ylabel="MB", title="state carried by the decoder")
    axes[0].legend(fontsize=7)
    contexts = sorted({r["context"] for r in rows})
    from matplotlib.ticker import NullFormatter

    for a in axes:
        a.title.set_fontsize(9)
        a.set_xticks(contexts, [f"{c // 1024}k" if c >= 1024 else str(c) for c in contexts])
        a.xaxis.set_minor_formatter(NullFormatter())
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        return plt
    except ImportError:
        return None


def plot_modes(rows: list[dict[str, Any]], path: str | Path) -> Path | None:
    """Bars per layer: whole-sequence time of each mode, and per-token step latency."""
    plt = _plt()
    if plt is None:
        return None
    import numpy as np

    rows = [r for r in rows if r.get("can_step")]
    names = [r["layer"] for r in rows]
    x = np.arange(len(names))
    fig, (a, b) = plt.subplots(1, 2, figsize=(max(8, 1.2 * len(names) + 4), 4))
    a.bar(x - 0.2, [1e3 * r["parallel_s"] for r in rows], 0.4, label="parallel")
    a.bar(x + 0.2, [1e3 * r["recurrent_s"] for r in rows], 0.4, label="recurrent (step loop)")
    a.set_yscale("log")
    a.set_ylabel("ms for the whole sequence")
    a.set_xticks(x, names, rotation=40, ha="right")
    a.legend(fontsize=8)
    L = rows[0]["length"] if rows else 0
    a.set_title(f"one sequence, L={L}, d_model={rows[0]['d_model'] if rows else 0}", fontsize=9)
    b.bar(x, [1e6 * r["step_latency_s"] for r in rows], 0.6, color="C2")
    b.set_ylabel("µs per token")
    b.set_xticks(x, names, rotation=40, ha="right")
    b.set_title(f"streaming: one step at position {L - 1}", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_speed(rows: list[dict[str, Any]], path: str | Path) -> Path | None:
    """Three panels: time against L, peak memory against L (solid: parallel, dashed:
    recurrent), and step latency against position."""
    plt = _plt()
    if plt is None:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    colors = plt.get_cmap("tab20").colors  # 20 distinct colours (tab10 repeats after 10 layers)
    for i, name in enumerate(layers):
        c = colors[(2 * i) % 20 + (2 * i) // 20 % 2]
        lr = sorted((r for r in rows if r["layer"] == name and r["kind"] == "length"), key=lambda r: r["length"])
        for mode, ls in (("parallel", "-"), ("recurrent", "--")):
            pts = [(r["length"], r[f"{mode}_s"], r[f"{mode}_mb"]) for r in lr if f"{mode}_s" in r]
            if pts:
                Ls, ts, ms = zip(*pts)
                axes[0].plot(Ls, [1e3 * t for t in ts], ls, color=c, marker="o", ms=3,
                             label=name if mode == "parallel" else None)
                axes[1].plot(Ls, ms, ls, color=c, marker="o", ms=3)
        pr = sorted((r for r in rows if r["layer"] == name and r["kind"] == "position"), key=lambda r: r["position"])
        if pr:
            axes[2].plot([max(1, r["position"]) for r in pr], [1e6 * r["step_s"] for r in pr], color=c, marker="o",
                         ms=3, label=name)
    axes[0].set(xscale="log", yscale="log", xlabel="L", ylabel="ms (whole sequence)",
                title="time vs L (solid: parallel, dashed: recurrent)")
    axes[1].set(xscale="log", yscale="log", xlabel="L", ylabel="peak extra MB (live tensors)", title="peak memory vs L")
    axes[2].set(xscale="log", yscale="log", xlabel="position t (tokens already seen)", ylabel="µs per step",
                title="step latency vs position")
    axes[0].legend(fontsize=7)
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    lengths = sorted({r["length"] for r in rows if r["kind"] == "length"})
    for a in axes:
        a.title.set_fontsize(9)
    for a in axes[:2]:  # ticks at the measured lengths, no crowded minor labels
        a.set_xticks(lengths, [str(n) for n in lengths])
        a.xaxis.set_minor_formatter(NullFormatter())
    axes[2].xaxis.set_major_formatter(ScalarFormatter())
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_jsonl(rows: list[dict[str, Any]], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return path
