"""Learning-rate schedules for CPT: Warmup-Stable-Annealing and its ablations (PAPER.md §3).

Reads and writes no artifact (`plot_schedule` writes one PNG). Steps are 0-based optimizer steps
0..T-1 and every kind is one piecewise function of three phases, with W = round(warmup_frac·T)
and D the decay length:

- warmup, steps 0..W-1: lr = peak·(s+1)/W, linear from peak/W (≈0, but the first step trains)
  to exactly peak at step W-1;
- stable, steps W..T-D-1: lr = peak;
- decay, the final D steps: progress p = (s-(T-D)+1)/D runs 1/D..1, every decay step is below the
  one before, and the last step T-1 is exactly final·peak.

The kinds differ only in D, the decay shape and the final ratio:

| kind     | D              | shape                     | final LR                   |
|----------|----------------|---------------------------|----------------------------|
| wsa      | round(a·T)     | cpt.schedule.anneal_shape | final_lr_ratio·peak        |
| cosine   | T-W (all rest) | cosine                    | final_lr_ratio·peak        |
| wsd      | round(a·T)     | linear                    | 0                          |
| constant | 0              | -                         | peak (after the warmup)    |

`wsa` is the paper's recipe: a long stable phase absorbs behaviour knowledge, a short anneal to a
small non-zero LR consolidates it. `cosine` is the classic full-run decay (ablation: does the
stable phase matter?). `wsd` is Warmup-Stable-Decay as MiniCPM (Hu et al. 2024, §4) introduced
it: the same stable phase, then a short decay to (near) zero; we use the linear-to-zero decay
that Hägele et al. (2024) showed matches MiniCPM's exponential one, so it differs from `wsa` in
ending at 0 with a fixed shape instead of at a configured floor with a configured shape.
`constant` keeps the peak after the warmup. Setting warmup_frac=0 gives the no-warmup ablation.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from pathlib import Path

from cprec_core.artifacts import atomic_write_bytes
from cprec_core.config import ScheduleConfig


def phase_steps(total_steps: int, cfg: ScheduleConfig) -> tuple[int, int]:
    """(warmup steps W, decay steps D) of a run of `total_steps` optimizer steps."""
    if total_steps < 1:
        raise ValueError(f"total_steps={total_steps}: a schedule needs at least one step")
    warmup = round(cfg.warmup_frac * total_steps)
    if cfg.kind == "cosine":
        decay = total_steps - warmup
    elif cfg.kind in ("wsa", "wsd"):
        decay = round(cfg.anneal_frac * total_steps)
    else:
        decay = 0
    # w + a <= 1 is validated, but both fractions rounding up can overshoot T by one step
    return warmup, min(decay, total_steps - warmup)


def _decay_factor(progress: float, shape: str, final: float) -> float:
    """Multiplier of peak at decay progress in [0, 1]: 1 at 0, exactly `final` at 1."""
    if progress >= 1.0:
        return final
    if shape == "cosine":
        return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if shape == "linear":
        return 1.0 - (1.0 - final) * progress
    if shape == "exponential":  # geometric: constant ratio per step, final > 0 (config-checked)
        return final**progress
    raise ValueError(f"cpt.schedule.anneal_shape={shape!r}: expected cosine, linear or exponential")


def lr_multiplier(step: int, total_steps: int, cfg: ScheduleConfig) -> float:
    """LR at `step` as a multiple of the peak LR (steps >= T keep the last step's value)."""
    if step < 0:
        raise ValueError(f"step={step}: must be >= 0")
    warmup, decay = phase_steps(total_steps, cfg)
    step = min(step, total_steps - 1)
    if step < warmup:
        return (step + 1) / warmup
    decay_start = total_steps - decay
    if step < decay_start:
        return 1.0
    shape, final = {
        "wsa": (cfg.anneal_shape, cfg.final_lr_ratio),
        "cosine": ("cosine", cfg.final_lr_ratio),
        "wsd": ("linear", 0.0),
    }[cfg.kind]
    return _decay_factor((step - decay_start + 1) / decay, shape, final)


def lr_at(step: int, total_steps: int, cfg: ScheduleConfig) -> float:
    """Learning rate at 0-based optimizer `step` of a `total_steps` run."""
    return cfg.peak_lr * lr_multiplier(step, total_steps, cfg)


def lr_lambda(total_steps: int, cfg: ScheduleConfig) -> Callable[[int], float]:
    """Multiplier-of-peak function for `torch.optim.lr_scheduler.LambdaLR`.

    Build the optimizer with lr = cfg.peak_lr. A plain closure: LambdaLR's state_dict then holds
    only its step counter, so a checkpoint stays loadable with `torch.load(weights_only=True)`.
    """
    phase_steps(total_steps, cfg)  # fail now, not at the first step

    def multiplier(step: int) -> float:
        return lr_multiplier(step, total_steps, cfg)

    return multiplier


def plot_schedule(total_steps: int, cfg: ScheduleConfig, path: Path) -> Path:
    """Write a PNG of the schedule (atomically) and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = range(total_steps)
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(list(steps), [lr_at(s, total_steps, cfg) for s in steps])
    warmup, decay = phase_steps(total_steps, cfg)
    ax.set(xlabel="optimizer step", ylabel="learning rate", title=f"{cfg.kind}: W={warmup}, D={decay}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)
