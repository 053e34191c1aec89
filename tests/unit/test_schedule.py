"""Tests for cprec_core/schedule.py: WSA and its ablations, pinned at phase boundaries by hand."""

from __future__ import annotations

import io
import itertools
import math

import pytest
import torch

from cprec_core.config import ConfigError, ScheduleConfig, config_from_dict
from cprec_core.schedule import lr_at, lr_lambda, phase_steps, plot_schedule

PEAK = 1e-3


def sched(**kw) -> ScheduleConfig:
    base = {"peak_lr": PEAK, "warmup_frac": 0.05, "anneal_frac": 0.2, "final_lr_ratio": 0.1}
    return ScheduleConfig(**{**base, **kw})


def test_wsa_linear_pinned_at_phase_boundaries() -> None:
    # T=100: W=round(0.05*100)=5, D=round(0.2*100)=20, anneal = steps 80..99.
    cfg = sched(kind="wsa", anneal_shape="linear")
    assert phase_steps(100, cfg) == (5, 20)
    assert lr_at(0, 100, cfg) == pytest.approx(PEAK * 1 / 5)  # warmup (s+1)/W
    assert lr_at(3, 100, cfg) == pytest.approx(PEAK * 4 / 5)
    assert lr_at(4, 100, cfg) == PEAK  # end of warmup reaches the peak exactly
    assert lr_at(5, 100, cfg) == PEAK  # stable
    assert lr_at(79, 100, cfg) == PEAK  # last stable step
    assert lr_at(80, 100, cfg) == pytest.approx(PEAK * (1 - 0.9 * 1 / 20))  # p=1/20 -> 0.955
    assert lr_at(89, 100, cfg) == pytest.approx(PEAK * 0.55)  # p=10/20 -> 1-0.9*0.5
    assert lr_at(99, 100, cfg) == PEAK * 0.1  # last step = final LR exactly
    assert lr_at(100, 100, cfg) == PEAK * 0.1  # LambdaLR asks for step T after the last step


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ("cosine", 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4))),  # p=5/20 at step 84 -> 0.868198
        ("linear", 1 - 0.9 * 0.25),  # 0.775
        ("exponential", 0.1**0.25),  # geometric: 0.562341
    ],
)
def test_wsa_anneal_shapes_at_quarter_progress(shape: str, expected: float) -> None:
    cfg = sched(kind="wsa", anneal_shape=shape)
    assert lr_at(84, 100, cfg) == pytest.approx(PEAK * expected)
    assert lr_at(99, 100, cfg) == pytest.approx(PEAK * 0.1, rel=1e-12)


def test_cosine_ablation_decays_over_the_whole_run_without_warmup() -> None:
    # warmup_frac=0: W=0, D=100; step s has p=(s+1)/100.
    cfg = sched(kind="cosine", warmup_frac=0.0)
    assert phase_steps(100, cfg) == (0, 100)
    assert lr_at(0, 100, cfg) == pytest.approx(PEAK * (0.1 + 0.45 * (1 + math.cos(0.01 * math.pi))))
    assert lr_at(49, 100, cfg) == pytest.approx(PEAK * 0.55)  # p=0.5: midway between peak and final
    assert lr_at(99, 100, cfg) == PEAK * 0.1


def test_wsd_decays_linearly_to_zero_ignoring_shape_and_floor() -> None:
    cfg = sched(kind="wsd", anneal_shape="cosine", final_lr_ratio=0.3)
    assert phase_steps(100, cfg) == (5, 20)
    assert lr_at(79, 100, cfg) == PEAK
    assert lr_at(89, 100, cfg) == pytest.approx(PEAK * 0.5)  # p=0.5, linear to 0
    assert lr_at(99, 100, cfg) == 0.0


def test_constant_keeps_peak_after_warmup() -> None:
    cfg = sched(kind="constant")
    assert [lr_at(s, 100, cfg) / PEAK for s in (0, 4, 5, 99)] == pytest.approx([0.2, 1.0, 1.0, 1.0])


def test_no_warmup_starts_at_peak() -> None:
    cfg = sched(kind="wsa", warmup_frac=0.0)
    assert lr_at(0, 100, cfg) == PEAK


def test_rounded_phases_never_exceed_the_run() -> None:
    # T=3, w=a=0.5: round(1.5)=2 twice would be 4 > 3 steps; the decay is cut to 1 step.
    cfg = sched(kind="wsa", warmup_frac=0.5, anneal_frac=0.5, anneal_shape="linear")
    assert phase_steps(3, cfg) == (2, 1)
    assert [lr_at(s, 3, cfg) / PEAK for s in range(3)] == pytest.approx([0.5, 1.0, 0.1])


@pytest.mark.parametrize("kind", ["wsa", "cosine", "wsd", "constant"])
@pytest.mark.parametrize("shape", ["cosine", "linear", "exponential"])
@pytest.mark.parametrize("total", [7, 100, 1001])
def test_each_phase_is_monotone(kind: str, shape: str, total: int) -> None:
    cfg = sched(kind=kind, anneal_shape=shape)
    w, d = phase_steps(total, cfg)
    lrs = [lr_at(s, total, cfg) for s in range(total)]
    warm, stable, decay = lrs[:w], lrs[w : total - d], lrs[total - d :]
    assert all(a < b for a, b in itertools.pairwise(warm))
    assert all(x == PEAK for x in stable)
    assert all(a > b for a, b in itertools.pairwise(decay))
    # the peak is reached unless the decay covers the whole run (cosine at T=7: W=round(0.35)=0)
    assert max(lrs) == PEAK if w or stable else max(lrs) < PEAK
    if d:
        assert lrs[-1] == pytest.approx({"wsd": 0.0}.get(kind, PEAK * 0.1), abs=1e-15)


def test_lambda_lr_resume_continues_identically() -> None:
    cfg = sched(kind="wsa", anneal_shape="cosine")
    total, cut = 40, 17

    def make() -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.peak_lr)
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(total, cfg))

    opt, sch = make()
    fresh = [opt.param_groups[0]["lr"]]
    for _ in range(total):
        opt.step()
        sch.step()
        fresh.append(opt.param_groups[0]["lr"])
    # the optimizer's LR at step s is lr_at(s): LambdaLR is the pure function, nothing more
    assert fresh == pytest.approx([lr_at(s, total, cfg) for s in range(total + 1)], rel=1e-12)

    opt, sch = make()
    resumed = [opt.param_groups[0]["lr"]]
    for _ in range(cut):
        opt.step()
        sch.step()
        resumed.append(opt.param_groups[0]["lr"])
    buf = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "sched": sch.state_dict()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)  # a closure lambda keeps the state plain
    opt, sch = make()
    opt.load_state_dict(state["opt"])
    sch.load_state_dict(state["sched"])
    for _ in range(total - cut):
        opt.step()
        sch.step()
        resumed.append(opt.param_groups[0]["lr"])
    assert resumed == fresh


def test_bad_inputs_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="total_steps=0"):
        lr_lambda(0, sched())
    with pytest.raises(ValueError, match="step=-1"):
        lr_at(-1, 10, sched())
    with pytest.raises(ConfigError, match="final_lr_ratio > 0"):
        config_from_dict({"cpt": {"schedule": {"anneal_shape": "exponential", "final_lr_ratio": 0}}})
    with pytest.raises(ConfigError, match=r"warmup_frac \+ anneal_frac"):
        config_from_dict({"cpt": {"schedule": {"warmup_frac": 0.5, "anneal_frac": 0.6}}})


def test_plot_schedule_writes_a_png(tmp_path) -> None:
    out = plot_schedule(50, sched(), tmp_path / "lr.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
