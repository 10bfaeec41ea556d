"""EMA of weights against closed forms: p_ema = sum_k (1-d) d^(n-k) p_k + d^n p_0 for a fixed
decay, and the explicit recursion with d_n = min(d, (1+n)/(10+n)) with warmup."""

from __future__ import annotations

import pytest
import torch

from uq_bias.training.ema import ExponentialMovingAverage


def test_ema_matches_closed_form_and_swaps_back():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    ema = ExponentialMovingAverage([p], decay=0.9, warmup=False)
    history = [p.detach().clone()]
    for step in range(5):
        with torch.no_grad():
            p.add_(torch.tensor([0.5, 0.25 * step], dtype=torch.float64))
        history.append(p.detach().clone())
        ema.update()
    d, n = 0.9, len(history) - 1
    expected = d**n * history[0] + sum((1 - d) * d ** (n - k) * history[k] for k in range(1, n + 1))
    current = p.detach().clone()
    with ema.swapped():
        torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(p.detach(), current, rtol=0, atol=0)


def test_ema_warmup_follows_the_schedule():
    p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    ema = ExponentialMovingAverage([p], decay=0.5)
    expected = 0.0
    for n, value in enumerate([1.0, 2.0, 3.0, 4.0, 5.0]):
        with torch.no_grad():
            p.fill_(value)
        ema.update()
        d = min(0.5, (1 + n) / (10 + n))  # 0.1, 0.18, 0.25, 0.31, 0.36 then capped
        expected = d * expected + (1 - d) * value
    torch.testing.assert_close(ema.shadow[0], torch.tensor([expected], dtype=torch.float64))


def test_ema_rejects_bad_decay():
    with pytest.raises(ValueError, match="decay"):
        ExponentialMovingAverage([], decay=1.0)
