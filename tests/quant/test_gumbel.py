"""GumbelQuantizer and the Gumbel-softmax sample: the sampling distribution, the tau -> 0
limit, the straight-through (hard) estimator, eval determinism, the KL term, the schedule.

What the statistical tests claim, precisely (Jang et al. 2017, eqs. 1-2; Maddison et al.
2017, Prop. 1). With g iid Gumbel(0, 1) and y = softmax((l + g) / tau):
  (b) "rounding": P(argmax y = k) = softmax(l)_k at EVERY tau (argmax y = argmax (l + g),
      the Gumbel-max trick). So the mean over draws of one_hot(argmax y), i.e. of the hard
      sample, estimates softmax(l) without bias; that is tested with a binomial tolerance.
  (c) "zero temperature": y -> one_hot(argmax (l + g)) as tau -> 0. The mean of y itself is
      NOT softmax(l) at a finite tau (tested: at tau = 1 it is measurably off); it tends to
      it as tau -> 0, tested at a small tau with a bias bound derived below.
"""

from __future__ import annotations

import math

import pytest
import torch

from seqzoo.quant import GumbelQuantizer, Tokenizer, gumbel_softmax, kl_to_uniform
from seqzoo.quant.gumbel import gumbel_noise
from tests.helpers import rel_err

LOGITS = torch.tensor([1.0, 0.0, -1.0, 0.5], dtype=torch.float64)  # softmax = [.41, .15, .06, .25]
N_DRAWS = 200_000
# 5 binomial standard errors at the worst case p = 1/2: a false alarm has probability < 1e-6
# per component.
STAT_TOL = 5 * 0.5 / math.sqrt(N_DRAWS)  # 0.0056


def _draws(tau: float, hard: bool, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    noise = gumbel_noise((N_DRAWS, 4), dtype=torch.float64, generator=g)
    return gumbel_softmax(LOGITS.expand(N_DRAWS, 4), tau, hard=hard, gumbels=noise)  # (N, K)


def test_gumbel_noise_has_the_gumbel_distribution():
    g = gumbel_noise((N_DRAWS,), dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    # Gumbel(0, 1): mean = Euler-Mascheroni gamma, variance = pi^2 / 6; CDF exp(-exp(-x))
    assert abs(float(g.mean()) - 0.5772156649) < 5 * math.pi / math.sqrt(6 * N_DRAWS)
    assert abs(float(g.var()) - math.pi**2 / 6) < 0.05
    for x in (-1.0, 0.0, 1.0, 3.0):
        assert abs(float((g <= x).double().mean()) - math.exp(-math.exp(-x))) < STAT_TOL


@pytest.mark.parametrize("tau", [0.1, 1.0, 5.0])
def test_hard_sample_frequencies_are_softmax_at_every_tau(tau):
    """Maddison et al. Prop. 1b: the argmax of the relaxed sample is Categorical(softmax(l)),
    whatever tau; its mean over draws (= the mean of the hard one-hot sample) matches
    softmax(l) within 5 binomial standard errors."""
    target = torch.softmax(LOGITS, -1)
    hard = _draws(tau, hard=True)
    assert rel_err(hard.sum(-1), torch.ones(N_DRAWS, dtype=torch.float64)) == 0
    assert (hard.mean(0) - target).abs().max() < STAT_TOL
    # the same for the argmax of the soft sample (same noise)
    soft = _draws(tau, hard=False)
    freq = torch.bincount(soft.argmax(-1), minlength=4).double() / N_DRAWS
    assert (freq - target).abs().max() < STAT_TOL


def test_relaxed_sample_mean_tends_to_softmax_as_tau_goes_to_0():
    """Maddison et al. Prop. 1c. Bias bound at small tau, with x = l + g, h = one_hot(argmax x)
    and gap = the difference of the two largest x: 1 - y_top <= (K-1) exp(-gap/tau), and
    |y_k - h_k| <= 1 - y_top <= 1, so for any d
        |E y_k - P(argmax = k)| <= E |y_k - h_k| <= P(gap < d) + (K-1) exp(-d/tau).
    Each x_i - x_j is logistic (difference of two Gumbels) with density <= 1/4, so
    P(gap < d) <= C(K, 2) * 2d/4. With K = 4, tau = 1e-4, d = 2e-3: bias <= 0.006 + 6e-9."""
    target = torch.softmax(LOGITS, -1)
    tau, d, K = 1e-4, 2e-3, 4
    bias = K * (K - 1) / 2 * 2 * d / 4 + (K - 1) * math.exp(-d / tau)
    soft = _draws(tau, hard=False)
    assert (soft.mean(0) - target).abs().max() < STAT_TOL + bias
    # ... and at tau = 1 the mean of the relaxed sample is visibly not softmax(l): it is
    # pulled towards uniform (why the test above needs a small tau)
    far = (_draws(1.0, hard=False).mean(0) - target).abs().max()
    assert far > 5 * STAT_TOL, float(far)


def test_hard_and_soft_outputs_agree_as_tau_goes_to_0():
    """With the same noise, ||q_soft - q_hard||_inf <= ||y - h||_1 max|E|
    <= 2 (K-1) exp(-gap / tau) max|E|, per position (gap from the noise, see above)."""
    torch.manual_seed(0)
    soft = GumbelQuantizer(3, 8, hard=False, tau_anneal_steps=0).double().train()
    hard = GumbelQuantizer(3, 8, hard=True, tau_anneal_steps=0).double().train()
    hard.load_state_dict(soft.state_dict())
    z = torch.randn(2, 50, 3, dtype=torch.float64)
    E = soft.codebook.detach()
    errs = []
    for tau in (1.0, 0.1, 0.01, 1e-3, 1e-4, 1e-5):
        soft.tau_min = soft.tau_start = hard.tau_min = hard.tau_start = tau
        torch.manual_seed(1)
        a = soft(z)
        torch.manual_seed(1)
        b = hard(z)
        assert torch.equal(a.ids, b.ids)  # the same Gumbel-max sample
        torch.manual_seed(1)
        x = soft.logits(z) + gumbel_noise((2, 50, 8), dtype=torch.float64)  # the noise both used
        top2 = x.topk(2, -1).values
        gap = top2[..., 0] - top2[..., 1]  # (B, L)
        bound = 2 * 7 * torch.exp(-gap / tau) * E.abs().max()
        diff = (a.quantized - b.quantized).detach().abs().amax(-1)  # (B, L)
        assert (diff <= bound + 1e-12).all()
        errs.append(float(diff.max()))
    assert errs[0] > 0.1 and errs[-1] < 1e-9, errs  # far apart at tau = 1, together at 1e-5
    assert errs == sorted(errs, reverse=True)


def test_hard_forward_is_exactly_one_hot_and_its_gradient_is_the_soft_one():
    torch.manual_seed(0)
    logits = torch.randn(64, 10, dtype=torch.float64) * 3
    noise = gumbel_noise((64, 10), dtype=torch.float64)
    w = torch.randn(64, 10, dtype=torch.float64)
    grads = {}
    for hard in (False, True):
        l = logits.clone().requires_grad_()
        y = gumbel_softmax(l, 0.5, hard=hard, gumbels=noise)
        (y * w).sum().backward()
        grads[hard] = l.grad
        if hard:
            one_hot = torch.nn.functional.one_hot((logits + noise).argmax(-1), 10).double()
            assert torch.equal(y.detach(), one_hot)  # bit-exact 0s and 1s
    # d/dl of the soft sample: J = (diag(y) - y y^T) / tau, applied to w
    y = torch.softmax((logits + noise) / 0.5, -1)
    expect = y * (w - (w * y).sum(-1, keepdim=True)) / 0.5
    assert rel_err(grads[False], expect) < 1e-12
    assert torch.equal(grads[True], grads[False])


def test_hard_module_outputs_codebook_rows_with_the_soft_gradient():
    torch.manual_seed(0)
    soft = GumbelQuantizer(4, 16, hard=False).double().train()
    hard = GumbelQuantizer(4, 16, hard=True).double().train()
    hard.load_state_dict(soft.state_dict())
    z = torch.randn(2, 7, 4, dtype=torch.float64)
    g = torch.randn(2, 7, 4, dtype=torch.float64)
    zs, zh = z.clone().requires_grad_(), z.clone().requires_grad_()
    torch.manual_seed(3)
    a = soft(zs)
    torch.manual_seed(3)
    b = hard(zh)
    assert torch.equal(b.quantized, hard.codebook.detach()[b.ids])  # exactly the codes
    assert not torch.equal(a.quantized, b.quantized)
    ((a.quantized * g).sum() + a.loss).backward()
    ((b.quantized * g).sum() + b.loss).backward()
    # dL/dy = g E^T is the same in both, and the hard sample passes the soft Jacobian on
    assert rel_err(zh.grad, zs.grad) < 1e-12
    # the codebook gradient differs: y^T g with y one-hot (hard) or the soft mix
    assert rel_err(hard.codebook.grad, soft.codebook.grad) > 1e-3


def test_eval_mode_is_deterministic_argmax_and_updates_nothing():
    q = GumbelQuantizer(5, 32).train()
    q(torch.randn(2, 9, 5))  # one training step
    q.eval()
    before = {k: v.clone() for k, v in q.state_dict().items()}
    z = torch.randn(3, 11, 5)
    torch.manual_seed(0)
    a = q(z)
    torch.manual_seed(1)
    b = q(z)
    assert torch.equal(a.quantized, b.quantized) and torch.equal(a.ids, b.ids) and torch.equal(a.loss, b.loss)
    logits = z @ q.to_logits.weight.T + q.to_logits.bias
    assert torch.equal(a.ids, logits.argmax(-1))
    assert torch.equal(a.quantized, q.codebook.detach()[a.ids])
    assert torch.equal(q.encode(z), a.ids) and torch.equal(q.decode(a.ids), a.quantized)
    for k, v in q.state_dict().items():
        assert torch.equal(v, before[k]), k
    # training mode samples: two seeds give different codes
    q.train()
    torch.manual_seed(0)
    c = q(z)
    torch.manual_seed(1)
    assert not torch.equal(c.ids, q(z).ids)


def test_kl_term_is_the_closed_form():
    """KL(q || U(K)) = sum_k q_k log q_k + log K, computed here in float64 from the logits
    with torch.distributions (independently of kl_to_uniform)."""
    torch.manual_seed(0)
    q = GumbelQuantizer(3, 6, kl_weight=0.7).double()
    z = torch.randn(2, 5, 3, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    logits = (z @ q.to_logits.weight.T + q.to_logits.bias).detach()
    dist = torch.distributions
    kl = dist.kl_divergence(dist.Categorical(logits=logits),
                            dist.Categorical(probs=torch.full((6,), 1 / 6, dtype=torch.float64)))  # (B, L)
    assert rel_err(kl_to_uniform(logits), kl) < 1e-12
    assert kl.min() > 0
    for m in (None, mask):
        out = q.train()(z, m)
        expect = kl.mean() if m is None else kl[m].mean()
        assert rel_err(out.stats["kl"], expect) < 1e-12
        assert rel_err(out.loss, 0.7 * expect) < 1e-12
    # 0 for uniform logits, log K for a one-hot limit
    assert abs(float(kl_to_uniform(torch.zeros(6, dtype=torch.float64)))) < 1e-15
    assert abs(float(kl_to_uniform(torch.tensor([1e4, 0, 0, 0, 0, 0], dtype=torch.float64))) - math.log(6)) < 1e-12


def test_masked_positions_do_not_change_the_loss_or_usage():
    q = GumbelQuantizer(3, 8).train()
    z = torch.randn(2, 6, 3)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    z2 = z.clone()
    z2[~mask] = 50.0
    torch.manual_seed(0)
    a = q(z, mask)
    torch.manual_seed(0)
    b = q(z2, mask)
    assert torch.equal(a.loss, b.loss) and torch.equal(a.stats["perplexity"], b.stats["perplexity"])


def test_temperature_decays_exponentially_to_its_floor():
    q = GumbelQuantizer(2, 4, tau_start=2.0, tau_min=0.125, tau_anneal_steps=100).train()
    assert float(q.temperature()) == 2.0
    assert abs(float(q.temperature(50)) - math.sqrt(2.0 * 0.125)) < 1e-6  # geometric midpoint
    # = max(tau_min, tau_start exp(-r t)) with r = log(tau_start / tau_min) / T
    r = math.log(2.0 / 0.125) / 100
    for t in (0, 10, 73, 100, 250):
        assert abs(float(q.temperature(t)) - max(0.125, 2.0 * math.exp(-r * t))) < 1e-6
    for _ in range(3):
        out = q(torch.randn(1, 4, 2))
    assert int(q.step) == 3 and abs(float(out.stats["tau"]) - 2.0 * math.exp(-r * 2)) < 1e-6
    q.eval()(torch.randn(1, 4, 2))
    assert int(q.step) == 3  # eval forwards do not advance the schedule
    assert float(GumbelQuantizer(2, 4, tau_min=0.3, tau_anneal_steps=0).temperature()) == pytest.approx(0.3)


def test_bad_options_give_clear_errors():
    with pytest.raises(ValueError, match="tau_min <= tau_start"):
        GumbelQuantizer(4, 8, tau_start=0.5, tau_min=1.0)
    with pytest.raises(ValueError, match="kl_weight"):
        GumbelQuantizer(4, 8, kl_weight=-1)
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        GumbelQuantizer(4, 8)(torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        GumbelQuantizer(4, 8).decode(torch.tensor([[8]]))
    with pytest.raises(ValueError, match="shape of logits"):
        gumbel_softmax(torch.zeros(3, 4), 1.0, gumbels=torch.zeros(3, 5))


def test_logits_stay_fp32_under_autocast():
    q = GumbelQuantizer(8, 64).eval()
    z = torch.randn(2, 30, 8)
    ref = q(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = q(z.bfloat16())
    assert torch.equal(got.ids, q.encode(z.bfloat16().float()))
    assert got.quantized.dtype == torch.bfloat16 and ref.quantized.dtype == torch.float32


@pytest.mark.parametrize("hard", [False, True])
def test_tokenizer_takes_the_gumbel_quantizer(hard, tmp_path):
    tok = Tokenizer(quantizer="gumbel", gumbel_hard=hard, codebook_size=32, d_latent=6, downsample=4, width=8,
                    tau_anneal_steps=10)
    x = torch.randn(3, 40, 1)
    opt = torch.optim.Adam(tok.parameters(), lr=1e-2)
    for _ in range(3):
        recon, info = tok.train()(x)
        opt.zero_grad()
        info["loss"].backward()
        opt.step()
    assert recon.shape == x.shape and info["ids"].shape == (3, 10)
    assert {"kl", "tau", "perplexity", "usage"} <= set(info)
    assert tok.quantizer.codebook.grad.abs().sum() > 0 and tok.encoder[0].weight.grad.abs().sum() > 0
    back = Tokenizer.load(tok.save(tmp_path / "tok"))
    assert back.config.gumbel_hard == hard and int(back.quantizer.step) == 3  # the schedule resumes
    assert torch.equal(back.encode(x), tok.encode(x))
    tok.eval()
    recon, info = tok(x)
    assert torch.allclose(recon, tok.decode(tok.encode(x), length=40), atol=1e-5)
