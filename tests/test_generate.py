"""Generation and streaming (seqzoo.models.generate), for every registered causal layer.

- greedy ``generate`` equals, token for token, the naive loop that reruns the full parallel
  forward on the growing sequence and takes the argmax (float64), ragged prompts included
- sampling is reproducible with a seeded generator; top-k / top-p keep only what they should
- ``eos_id`` ends a row; ``Stream`` over chunks of any size equals one forward
"""

from __future__ import annotations

import pytest
import torch

import seqzoo
from seqzoo.models.generate import Decoder, prefill, sample_next
from tests.helpers import rel_err

V = 13


def _causal_cases():
    """Each registered layer with its first test variant that can step (small options)."""
    out = []
    for name in seqzoo.list_layers():
        for variant in seqzoo.get_layer(name).cls.test_variants:
            if seqzoo.build(name, d_model=16, **variant).can_step():
                out.append(pytest.param(name, variant, id=name))
                break
    return out


CAUSAL = _causal_cases()


def _lm(name, variant, **kw):
    torch.manual_seed(0)
    return seqzoo.build_model(name, d_model=16, n_layers=2, vocab_size=V, head="lm", layer_options=dict(variant),
                              **kw).double().eval()


def _naive_greedy(model, prompt: torch.Tensor, n: int) -> list[int]:
    """The definition: rerun the parallel forward on the growing sequence, take the argmax."""
    seq = prompt[None]
    out = []
    for _ in range(n):
        logits, _ = model(seq)
        tok = logits[0, -1].argmax()
        out.append(int(tok))
        seq = torch.cat([seq, tok.view(1, 1)], dim=1)
    return out


@pytest.mark.parametrize("name, variant", CAUSAL)
def test_greedy_equals_naive_loop_ragged_prompts(name, variant):
    """Three prompts of lengths 7, 3 and 1 in one right-padded batch (the padding is garbage),
    9 new tokens each: past the block / chunk boundaries of the block-wise layers."""
    model = _lm(name, variant)
    g = torch.Generator().manual_seed(1)
    prompts = torch.randint(0, V, (3, 7), generator=g)
    lengths = torch.tensor([7, 3, 1])
    got = model.generate(prompts, 9, lengths=lengths)
    assert got.shape == (3, 9) and got.dtype == torch.long
    for b, n in enumerate(lengths.tolist()):
        assert got[b].tolist() == _naive_greedy(model, prompts[b, :n], 9), f"row {b} (prompt length {n})"
    # without lengths: the full prompts
    full = model.generate(prompts[:2], 4)
    assert full[1].tolist() == _naive_greedy(model, prompts[1], 4)


def test_prefill_returns_the_state_after_the_last_real_token():
    model = _lm(*CAUSAL[0].values)
    prompts = torch.randint(0, V, (2, 6))
    logits, state = prefill(model, prompts, lengths=torch.tensor([6, 2]))
    want, s_row = model(prompts[1:, :2], return_state=True)
    assert rel_err(logits[1:], want[:, -1]) < 1e-12
    nxt = torch.tensor([3, 3])
    a, _ = model.step(nxt, state)
    b, _ = model.step(nxt[1:], s_row)
    assert rel_err(a[1:], b) < 1e-9


def test_sampling_is_reproducible_with_a_seeded_generator():
    model = _lm("mamba", {})
    prompts = torch.randint(0, V, (2, 4))

    def draw(seed, **kw):
        return model.generate(prompts, 24, do_sample=True, temperature=1.5, generator=torch.Generator().manual_seed(seed), **kw)

    a, b, c = draw(0), draw(0), draw(1)
    assert torch.equal(a, b)
    assert not torch.equal(a, c), "two seeds drew the same 48 tokens"
    greedy = model.generate(prompts, 24)
    assert torch.equal(draw(5, top_k=1), greedy)  # only the most likely token is left
    assert torch.equal(draw(6, top_p=1e-6), greedy)
    assert torch.equal(draw(7, top_k=3), draw(7, top_k=3))


def test_top_k_and_top_p_keep_only_their_tokens():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.05, 0.15, 0.3, 0.5]])
    logits = probs.log().repeat_interleave(1000, 0)  # 2000 rows
    g = torch.Generator().manual_seed(0)
    s = sample_next(logits, do_sample=True, top_p=0.7, generator=g).view(2, 1000)
    assert set(s[0].tolist()) == {0, 1} and set(s[1].tolist()) == {3, 2}  # 0.5 + 0.3 reaches 0.7
    s = sample_next(logits, do_sample=True, top_k=3, generator=g).view(2, 1000)
    assert set(s[0].tolist()) == {0, 1, 2} and set(s[1].tolist()) == {1, 2, 3}
    # the kept tokens keep their relative odds: token 0 about 0.5 / 0.8 of the time at top_p=0.7
    s = sample_next(probs.log().repeat(10000, 1)[::2], do_sample=True, top_p=0.7, generator=g)
    assert abs((s == 0).float().mean().item() - 0.625) < 0.03
    assert torch.equal(sample_next(logits), logits.argmax(-1))


def test_eos_ends_a_row():
    model = _lm("s4d", {"init": "lin"})
    prompts = torch.randint(0, V, (2, 5))
    free = model.generate(prompts, 10)
    eos = int(free[0, 2])
    got = model.generate(prompts, 10, eos_id=eos)
    first = free[0].tolist().index(eos)
    assert got[0, : first + 1].tolist() == free[0, : first + 1].tolist()
    assert (got[0, first:] == eos).all()
    row1 = free[1].tolist()
    stop = row1.index(eos) if eos in row1 else 10
    assert got[1, : stop + 1].tolist() == row1[: stop + 1]
    assert model.generate(prompts, 0).shape == (2, 0)


def test_generate_rejects_bad_requests():
    model = _lm("mamba", {})
    prompts = torch.randint(0, V, (2, 5))
    with pytest.raises(ValueError, match="lengths"):
        model.generate(prompts, 3, lengths=torch.tensor([5, 0]))
    with pytest.raises(ValueError, match="temperature"):
        model.generate(prompts, 3, do_sample=True, temperature=0.0)
    with pytest.raises(ValueError, match="top_p"):
        model.generate(prompts, 3, do_sample=True, top_p=1.5)
    with pytest.raises(ValueError, match="empty"):
        model.generate(prompts[:, :0], 3)
    with pytest.raises(ValueError, match="mode"):
        Decoder(model, "graph")
    clf = seqzoo.build_model("mamba", d_model=16, n_layers=1, vocab_size=V, n_classes=3)
    with pytest.raises(ValueError, match="head"):
        clf.generate(prompts, 3)
    bi = seqzoo.build_model("s4d", d_model=16, n_layers=1, vocab_size=V, head="lm", layer_options={"bidirectional": True})
    with pytest.raises(NotImplementedError, match="bidirectional"):
        bi.generate(prompts, 3)
    with pytest.raises(ValueError, match="CUDA device"):
        Decoder(model, "cuda_graph")(prompts[:, 0], model.init_state(2))
    att = _lm("attention", {})
    with pytest.raises(ValueError, match="fixed-shape states.*attention"):
        Decoder(att, "cuda_graph")(prompts[:, 0], att.init_state(2))


@pytest.mark.parametrize("name, variant", CAUSAL)
def test_stream_equals_one_forward(name, variant):
    """Chunks of 1, 5, 0, 2 and the rest tokens, concatenated, equal one forward."""
    model = _lm(name, variant)
    x = torch.randint(0, V, (2, 17))
    want, _ = model(x)
    stream = model.stream()
    outs, lo = [], 0
    for n in (1, 5, 0, 2, 9):
        outs.append(stream(x[:, lo : lo + n]))
        lo += n
    assert rel_err(torch.cat(outs, dim=1), want) < 1e-9
    stream.reset()
    assert rel_err(stream(x[:, :4]), want[:, :4]) < 1e-9


@pytest.mark.parametrize("pool", ["mean", "max", "last"])
def test_stream_classifier_pools_the_prefix(pool):
    torch.manual_seed(0)
    model = seqzoo.build_model("gau", d_model=16, n_layers=2, vocab_size=V, n_classes=3, pool=pool,
                               layer_options={"head_dim": 8, "chunk_size": 4}).double().eval()
    x = torch.randint(0, V, (2, 15))
    stream = model.stream()
    for lo, hi in ((0, 3), (3, 4), (4, 11)):
        got = stream(x[:, lo:hi])
        assert rel_err(got, model(x[:, :hi])[0]) < 1e-9, f"after {hi} tokens"
    # a ragged last chunk: row 1 ends 2 tokens early
    got = stream(x[:, 11:], lengths=torch.tensor([4, 2]))
    assert rel_err(got[0], model(x[:1])[0][0]) < 1e-9
    assert rel_err(got[1], model(x[1:, :13])[0][0]) < 1e-9


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mamba", "attention", "s4d"])
def test_compiled_decoder_equals_eager(name):
    """Decoder(mode="compile") (inductor with its C++ wrapper on CPU) decodes the same tokens
    as eager decoding: Mamba's fused step op inside the graph, attention's growing KV cache
    (dynamic shapes), a diagonal SSM."""
    torch._dynamo.reset()
    model = _lm(name, {})
    prompts = torch.randint(0, V, (2, 6))
    assert torch.equal(model.generate(prompts, 8, mode="compile"), model.generate(prompts, 8))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", ["mamba", "s4d", "mamba2", "gau"])
def test_cuda_graph_decoder_equals_eager(name):
    """Decoding replayed from a captured CUDA graph gives the eager tokens (float32 on the GPU;
    greedy over 16 tokens, ragged prompts)."""
    variant = next(c.values[1] for c in CAUSAL if c.values[0] == name)
    torch.manual_seed(0)
    model = seqzoo.build_model(name, d_model=32, n_layers=2, vocab_size=V, head="lm",
                               layer_options=dict(variant)).cuda().eval()
    prompts = torch.randint(0, V, (3, 9), device="cuda")
    lengths = torch.tensor([9, 4, 1], device="cuda")
    eager = model.generate(prompts, 16, lengths=lengths)
    assert torch.equal(model.generate(prompts, 16, lengths=lengths, mode="cuda_graph"), eager)
