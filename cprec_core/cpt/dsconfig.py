"""DeepSpeed config: the ZeRO templates in deploy/deepspeed/ with their "auto" values filled from cfg.cpt.

Reads deploy/deepspeed/zero{2,3}.json; writes nothing (the dict goes to deepspeed.initialize and
into the job's work dir). Implements DESIGN.md stage 5 (ZeRO-2 default, ZeRO-3 option).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cprec_core.config import ConfigError, CPTConfig
from cprec_core.resources import shipped

TEMPLATE_DIR = shipped("deepspeed")


def fill_ds_config(cpt: CPTConfig, world_size: int, template_dir: Path = TEMPLATE_DIR) -> dict[str, Any]:
    """The ZeRO-{cpt.zero_stage} template with every "auto" replaced by a value from cfg.cpt.

    AdamW runs as plain torch AdamW (no C++ compile) unless the optimizer is offloaded, which
    needs DeepSpeed's CPU Adam (STACK-NOTES).
    """
    path = Path(template_dir) / f"zero{cpt.zero_stage}.json"
    ds = json.loads(path.read_text())
    offload = {"device": "cpu", "pin_memory": False}
    values = {
        ("train_micro_batch_size_per_gpu",): cpt.micro_batch_size,
        ("gradient_accumulation_steps",): cpt.grad_accum_steps,
        ("train_batch_size",): cpt.micro_batch_size * cpt.grad_accum_steps * world_size,
        ("gradient_clipping",): cpt.grad_clip,
        ("bf16", "enabled"): cpt.precision == "bf16",
        ("optimizer", "params", "lr"): cpt.schedule.peak_lr,
        ("optimizer", "params", "weight_decay"): cpt.weight_decay,
        ("optimizer", "params", "torch_adam"): not cpt.offload_optimizer,
        ("zero_optimization", "offload_optimizer"): offload if cpt.offload_optimizer else {"device": "none"},
        ("zero_optimization", "offload_param"): offload if cpt.offload_params else {"device": "none"},
    }
    for keys, value in values.items():
        node = ds
        for k in keys[:-1]:
            node = node.get(k, {})
        if keys[-1] in node:  # a template may leave a key out (zero2 has no offload_param)
            node[keys[-1]] = value
    left = _autos(ds)
    if left:
        raise ConfigError(f"{path}: no cfg.cpt value fills the 'auto' at {', '.join(left)}")
    return ds


def _autos(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _autos(v, f"{prefix}{k}.")]
    return [prefix.rstrip(".")] if node == "auto" else []
