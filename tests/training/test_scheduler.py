"""cosyvoice.utils.scheduler: the three schedules of train_conf.scheduler, by their formulas."""
from __future__ import annotations

import math

import pytest
import torch

from cosyvoice.utils.scheduler import ConstantLR, NoamHoldAnnealing, WarmupLR, build_scheduler


def _opt(lr=1.0):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def _lrs(sched, n):
    out = [sched.optimizer.param_groups[0]["lr"]]
    for _ in range(n):
        sched.optimizer.step()
        sched.step()
        out.append(sched.optimizer.param_groups[0]["lr"])
    return out


def test_constant_lr_ignores_its_conf():
    sched = build_scheduler("constantlr", _opt(0.5), {"warmup_steps": 2500})
    assert isinstance(sched, ConstantLR)
    assert _lrs(sched, 4) == [0.5] * 5


def test_warmup_lr_peaks_at_warmup_steps():
    sched = WarmupLR(_opt(1.0), warmup_steps=4)
    lrs = _lrs(sched, 8)
    # n = step + 1: rises as n / 4**1.5 * 4**0.5 = n / 4 up to n = 4, then 2 / sqrt(n)
    expected = [min(n ** -0.5, n * 4 ** -1.5) * 4 ** 0.5 for n in range(1, 10)]
    assert lrs == pytest.approx(expected, rel=1e-12)
    assert max(lrs) == pytest.approx(1.0) and lrs.index(max(lrs)) == 3


def test_warmup_lr_without_warmup_is_inverse_sqrt():
    assert _lrs(WarmupLR(_opt(2.0), warmup_steps=0), 3) == pytest.approx([2.0 / math.sqrt(n) for n in range(1, 5)])


def test_noam_hold_annealing_phases():
    sched = NoamHoldAnnealing(_opt(1.0), warmup_steps=3, hold_steps=2, max_steps=12, decay_rate=0.5, min_lr=0.3)
    lrs = _lrs(sched, 14)
    assert lrs[:4] == pytest.approx([1 / 4, 2 / 4, 3 / 4, 4 / 4])        # warmup: (step + 1) / (W + 1)
    assert lrs[4] == pytest.approx(1.0)                                 # hold: W <= step < W + H
    # decay: sqrt(W) / sqrt(step - H), floored at min_lr
    assert lrs[5:13] == pytest.approx([max(0.3, math.sqrt(3) / math.sqrt(s - 2)) for s in range(5, 13)])
    assert lrs[13:] == [0.3, 0.3]                                      # past max_steps: min_lr


def test_noam_hold_annealing_needs_warmup():
    with pytest.raises(ValueError, match="needs warmup_steps"):
        NoamHoldAnnealing(_opt(1.0), max_steps=10)
    with pytest.raises(ValueError, match="warmup_steps or warmup_ratio, not both"):
        NoamHoldAnnealing(_opt(1.0), max_steps=10, warmup_steps=2, warmup_ratio=0.1)


def test_set_step_and_state_dict_restore_the_same_lr():
    a = build_scheduler("warmuplr", _opt(1.0), {"warmup_steps": 5})
    _lrs(a, 7)
    b = build_scheduler("warmuplr", _opt(1.0), {"warmup_steps": 5})
    b.load_state_dict(a.state_dict())
    assert _lrs(b, 3)[1:] == _lrs(a, 3)[1:]
    c = build_scheduler("warmuplr", _opt(1.0), {"warmup_steps": 5})
    c.set_step(10)
    assert c.optimizer.param_groups[0]["lr"] == pytest.approx(5 ** 0.5 * 11 ** -0.5)


def test_unknown_scheduler_is_named():
    with pytest.raises(ValueError, match="unknown train_conf.scheduler 'cosine' .*constantlr, warmuplr, NoamHoldAnnealing"):
        build_scheduler("cosine", _opt())
