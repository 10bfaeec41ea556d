"""EMA of weights against the closed form p_ema = sum_k (1-d) d^(n-k) p_k + d^n p_0."""

from __future__ import annotations

import pytest
import torch

from uq_bias.training.ema import ExponentialMovingAverage


def test_ema_matches_closed_form_and_swaps_back():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    ema = ExponentialMovingAverage([p], decay=0.9)
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


def test_ema_rejects_bad_decay():
    with pytest.raises(ValueError, match="decay"):
        ExponentialMovingAverage([], decay=1.0)
