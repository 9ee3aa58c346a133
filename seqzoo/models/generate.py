"""Generation and streaming with a :class:`~seqzoo.models.SequenceModel`: the parallel form
for the prompt, the recurrent form for every new token.

    tokens = model.generate(prompt_ids, 32)                                   # greedy, (B, 32)
    tokens = model.generate(prompt_ids, 32, do_sample=True, top_p=0.9, generator=g)
    tokens = model.generate(padded_ids, 32, lengths=lengths)                  # ragged prompts
    stream = model.stream()
    for chunk in chunks:                                                      # chunks of any size
        out = stream(chunk)

**Prefill** (:func:`prefill`) runs the prompt through the parallel form once; ``lengths``
marks right padding, and every layer returns the state after each row's *last real* token
(SSM states, attention's KV cache with the padded slots masked out), so rows of different
lengths continue correctly. **Decode** then feeds one token at a time through
``model.step``: constant memory per step for the recurrent layers. :class:`Decoder` runs that
step eagerly, compiled (``torch.compile``), or replayed from a captured CUDA graph with the
state in static buffers (as ``mamba_ssm``'s generation does; fixed-shape states only).

Greedy decoding is exactly the naive loop that reruns the full parallel forward on the
growing sequence and takes the argmax (tests/test_generate.py checks it token for token in
float64 for every causal layer). Sampling (temperature, top-k, nucleus/top-p; Holtzman et
al. 2020, "The Curious Case of Neural Text Degeneration", §3.1) draws from ``generator``,
so a seeded generator reproduces a sample.

:class:`Stream` is the chunked-with-state contract as an API: feed a sequence in chunks of
any size; the outputs equal one forward over the whole sequence (a language model's
logits per position, a classifier's logits for the prefix seen so far).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

__all__ = ["prefill", "sample_next", "generate", "Decoder", "Stream", "DecodeMode"]

DecodeMode = Literal["eager", "compile", "cuda_graph"]


# ------------------------------------------------------------------------------ checks
def _need_head(model, heads: tuple[str, ...], what: str) -> None:
    head = model.config.head
    if head not in heads:
        raise ValueError(f"{what} needs a model with head in {heads}, got head={head!r}")
    if model.frontend is not None:
        raise NotImplementedError(f"{what} with a frontend: tokenize the stream first, then feed the ids")
    if model.config.pair:
        raise NotImplementedError(f"{what}: a pair classifier sees two whole sequences")
    for m in model.mixers:
        why = m.step_disabled_reason()
        if why is not None:
            raise NotImplementedError(f"{what} needs every layer to carry a state; {m.name}: {why}")


def _check_lengths(lengths: Tensor | None, B: int, L: int, device) -> Tensor | None:
    if lengths is None:
        return None
    lengths = torch.as_tensor(lengths, device=device)
    if lengths.shape != (B,) or lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise ValueError(f"lengths must be an integer tensor (B,) = ({B},), got {tuple(lengths.shape)} {lengths.dtype}")
    lengths = lengths.long()
    if B and (int(lengths.min()) < 1 or int(lengths.max()) > L):
        raise ValueError(f"prompt lengths must lie in [1, L={L}] (every row needs a token to continue from), "
                         f"got min {int(lengths.min())}, max {int(lengths.max())}")
    return lengths


# ------------------------------------------------------------------------------ prefill
def prefill(model, prompt_ids: Tensor, *, lengths: Tensor | None = None, state=None) -> tuple[Tensor, tuple]:
    """The parallel form over a prompt: prompt_ids (B, L) (right-padded where ``lengths``
    (B,) says) -> (logits (B, V) at each row's last real token, the per-layer state after it).
    ``state`` continues from an earlier prefill or decode. Only the last position goes
    through the LM head (not all L)."""
    _need_head(model, ("lm",), "prefill")
    if not isinstance(prompt_ids, Tensor) or prompt_ids.dim() != 2:
        raise ValueError(f"prompt_ids must be a (B, L) tensor of token ids, got {getattr(prompt_ids, 'shape', type(prompt_ids))}")
    B, L = prompt_ids.shape
    if L < 1:
        raise ValueError("the prompt is empty (L = 0): give at least one token per row")
    lengths = _check_lengths(lengths, B, L, prompt_ids.device)
    x, state, _ = model.features(prompt_ids, state, lengths=lengths, return_state=True)  # (B, L, D)
    last = lengths - 1 if lengths is not None else torch.full((B,), L - 1, device=x.device)
    return model.head(x[torch.arange(B, device=x.device), last]), state


# ------------------------------------------------------------------------------ sampling
def sample_next(logits: Tensor, *, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                do_sample: bool = False, generator: torch.Generator | None = None) -> Tensor:
    """The next token per row: logits (B, V) -> (B,) long. Greedy (argmax) unless
    ``do_sample``; then softmax(logits / temperature) restricted to the ``top_k`` largest and
    to the smallest set whose probability reaches ``top_p`` (the most likely token always
    stays), sampled with ``generator``."""
    if not do_sample:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = (probs.cumsum(-1) - probs) >= top_p  # the mass before a token already reaches top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]


def _check_sampling(max_new_tokens, temperature, top_k, top_p) -> None:
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 (use do_sample=False for greedy decoding), got {temperature}")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must lie in (0, 1] or be None, got {top_p}")


# ------------------------------------------------------------------------------ decode
def _tensors(state) -> list[Tensor]:
    return [t for layer_state in state for t in layer_state if isinstance(t, Tensor)]


class Decoder:
    """``model.step`` for decoding, one token per call: ``logits, state = decoder(tokens, state)``.

    mode:
        "eager"       model.step as it is.
        "compile"     ``torch.compile(model.step)``: "reduce-overhead" (CUDA graphs through
                      torch.compile) on a GPU, Inductor's C++ wrapper on a CPU (the step's
                      kernels and ops called from C++, no Python between them). Every
                      layer's step compiles without graph breaks
                      (tests/layers/test_compile.py); the first calls pay the compile.
        "cuda_graph"  capture one step in a CUDA graph on the first call and replay it for
                      every token; the state lives in static buffers that each replay
                      updates (a step computes the new state functionally; the graph then
                      copies it into the buffers). Needs fixed-shape states: not attention,
                      whose KV cache grows by a token per step.

    With "cuda_graph" the returned state *is* the decoder's buffer: the next call overwrites
    it (so does any further call), unlike ``model.step``, which never writes in place. Pass
    it back unchanged, or copy it to keep it.
    """

    def __init__(self, model, mode: DecodeMode = "eager"):
        if mode not in ("eager", "compile", "cuda_graph"):
            raise ValueError(f"Decoder mode must be 'eager', 'compile' or 'cuda_graph', got {mode!r}")
        _need_head(model, ("lm", "none"), "Decoder")
        self.model, self.mode = model, mode
        if mode == "compile":
            device = next(model.parameters()).device
            if device.type == "cuda":
                self._fn = torch.compile(model.step, mode="reduce-overhead")
            else:  # C++ wrapper: the compiled step calls its kernels without Python in between
                self._fn = torch.compile(model.step, options={"cpp_wrapper": True})
        else:
            self._fn = model.step
        self._graph = None

    def __call__(self, tokens: Tensor, state) -> tuple[Tensor, tuple]:
        if self.mode != "cuda_graph":
            return self._fn(tokens, state)
        if self._graph is None:
            self._capture(tokens, state)
        return self._replay(tokens, state)

    # ---------------------------------------------------------------- CUDA graphs
    def _capture(self, tokens: Tensor, state) -> None:
        grows = [m.name for m in self.model.mixers if m.state_grows]
        if grows:
            raise ValueError(f"mode='cuda_graph' needs fixed-shape states, but the {grows[0]} layer's state grows "
                             "by a token per step (a KV cache); use mode='eager' or 'compile'")
        if tokens.device.type != "cuda":
            raise ValueError(f"mode='cuda_graph' needs the model and tokens on a CUDA device, got {tokens.device}")
        self._tokens = tokens.clone()
        self._state = tuple(type(s)(*(t.clone() if isinstance(t, Tensor) else t for t in s)) for s in state)
        # warm up on a side stream (first-call work: caches, backend probes, allocator), then capture
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self.model.step(self._tokens, self._state)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            logits, new = self.model.step(self._tokens, self._state)
            for buf, t in zip(_tensors(self._state), _tensors(new)):
                if t.shape != buf.shape:
                    raise ValueError("mode='cuda_graph': a layer's state changed shape in a step; use mode='eager'")
                buf.copy_(t)
        self._graph, self._logits = graph, logits

    def _replay(self, tokens: Tensor, state) -> tuple[Tensor, tuple]:
        self._tokens.copy_(tokens)
        if state is not self._state:  # a state from elsewhere (the prefill): load it into the buffers
            for buf, t in zip(_tensors(self._state), _tensors(state)):
                buf.copy_(t)
        self._graph.replay()
        return self._logits, self._state


# ------------------------------------------------------------------------------ generate
def generate(model, prompt_ids: Tensor, max_new_tokens: int, *, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, do_sample: bool = False, eos_id: int | None = None,
             lengths: Tensor | None = None, generator: torch.Generator | None = None,
             mode: DecodeMode = "eager") -> Tensor:
    """Continue each prompt by ``max_new_tokens`` tokens: (B, L) ids -> (B, max_new_tokens) ids.

    Parallel prefill of the prompt (``lengths``: right-padded, ragged prompts), then one
    recurrent ``step`` per new token (``mode``: see :class:`Decoder`). Greedy unless
    ``do_sample`` (then ``temperature``, ``top_k``, ``top_p``, drawn from ``generator``).
    After a row emits ``eos_id``, its remaining positions hold ``eos_id``; decoding stops
    early when every row has. The model should be in eval mode (dropout would randomise
    the logits). Runs under ``torch.inference_mode``.
    """
    _check_sampling(max_new_tokens, temperature, top_k, top_p)
    with torch.inference_mode():
        logits, state = prefill(model, prompt_ids, lengths=lengths)
        B = prompt_ids.shape[0]
        out = torch.full((B, max_new_tokens), eos_id if eos_id is not None else 0, dtype=torch.long,
                         device=prompt_ids.device)
        done = torch.zeros(B, dtype=torch.bool, device=prompt_ids.device)
        decoder = Decoder(model, mode) if max_new_tokens > 1 else None
        for i in range(max_new_tokens):
            tok = sample_next(logits, temperature=temperature, top_k=top_k, top_p=top_p, do_sample=do_sample,
                              generator=generator)
            if eos_id is not None:
                tok = tok.masked_fill(done, eos_id)
                done = done | (tok == eos_id)
            out[:, i] = tok
            if i + 1 == max_new_tokens or (eos_id is not None and bool(done.all())):
                break
            logits, state = decoder(tok, state)
    return out


# ------------------------------------------------------------------------------ streaming
class Stream:
    """Feed one sequence batch in chunks of any size, carrying every layer's state:
    ``out = stream(chunk)`` with chunk (B, L) ids (or (B, L, d_input) values).

    Returns per chunk: a language model's logits (B, L, V) (head "lm"), the features
    (B, L, D) (head "none"), or a classifier's logits (B, n_classes) for the whole prefix
    seen so far, pooled as the model pools ("mean", "max", "last"). Concatenated, the
    outputs equal one forward over the whole sequence. ``lengths`` (B,) marks right padding
    in a chunk (e.g. the last, ragged one); rows are then at different positions and carry on
    from there. Runs under ``torch.inference_mode``.
    """

    def __init__(self, model):
        _need_head(model, ("lm", "none", "classify"), "stream")
        self.model = model
        self.reset()

    def reset(self) -> None:
        """Forget everything seen: the next chunk starts a new sequence."""
        self.state: tuple | None = None
        self._pool: dict[str, Any] = {}

    @torch.inference_mode()
    def __call__(self, chunk: Tensor, *, lengths: Tensor | None = None) -> Tensor:
        model = self.model
        x, self.state, lengths = model.features(chunk, self.state, lengths=lengths, return_state=True)  # (B, L, D)
        if model.config.head != "classify":
            return model.head(x) if model.head is not None else x
        return model.head(self._pooled(x, lengths))

    def _pooled(self, x: Tensor, lengths: Tensor | None) -> Tensor:
        """Fold the chunk's features into running pools; the pooled features so far (B, D),
        as :meth:`SequenceModel._pool` computes them over the whole sequence."""
        B, L, D = x.shape
        lengths = torch.full((B,), L, device=x.device, dtype=torch.long) if lengths is None else lengths
        real = torch.arange(L, device=x.device)[None, :] < lengths[:, None]  # (B, L)
        p = self._pool
        count = p.get("count", torch.zeros(B, dtype=torch.long, device=x.device)) + lengths
        kind = self.model.config.pool
        if kind == "mean":
            p["sum"] = p.get("sum", x.new_zeros(B, D)) + x.masked_fill(~real[..., None], 0).sum(1)
            pooled = p["sum"] / count.clamp(min=1)[:, None].to(x.dtype)
        elif kind == "max":
            chunk_max = x.masked_fill(~real[..., None], float("-inf")).amax(1) if L else x.new_full((B, D), float("-inf"))
            p["max"] = torch.maximum(p.get("max", x.new_full((B, D), float("-inf"))), chunk_max)
            pooled = p["max"].masked_fill((count == 0)[:, None], 0.0)
        else:  # "last": the last real token seen, in this chunk if it has one
            if L:
                last = x[torch.arange(B, device=x.device), (lengths - 1).clamp(min=0)]
                p["last"] = torch.where((lengths > 0)[:, None], last, p.get("last", x.new_zeros(B, D)))
            pooled = p.get("last", x.new_zeros(B, D))
        p["count"] = count
        return pooled
