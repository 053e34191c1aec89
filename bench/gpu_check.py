"""`python -m bench.gpu_check [--smoke] [--out DIR]`: the GPU check, one script, one JSON + log.

On a GPU (`make gpu-check`, < 8 min on one H100/H200-class GPU), on the real data of ../shared/data:
1. CPT of SmolLM2-135M (`make base-model`), ZeRO-2, bf16, `--steps` steps: tokens/s, MFU (the
   model's FLOPs per token x tokens/s over the GPU's peak bf16 FLOP/s, `--peak-tflops`), peak memory;
2. the same for a few steps with ZeRO-3;
3. one epoch of Scientific with finetune.encoder_mode=full on the CPT checkpoint: seconds per epoch,
   valid NDCG@10 after it.
`--smoke` runs the same code on the CPU with the tiny model and the synthetic demo data, a few
steps each (what CI runs: it checks the script, not the speed).

Every stage runs through the pipeline's own flow (`flows.cprec.cprec`), so this measures what a
user's run does. Writes `<out>/gpu_check.json` (the numbers, the device, the command) and
`<out>/gpu_check.log` (everything the stages printed).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SMOLLM2 = ROOT / "var" / "models" / "smollm2-135m"
H200_BF16_TFLOPS = 989.0  # dense bf16 peak of an H100/H200 SXM (NVIDIA data sheet)


def flops_per_token(model_dir: Path, seq_len: int) -> float:
    """Training FLOPs per token: 6 N (forward + backward through every weight) + 12 L T d (attention
    scores and values, PaLM's appendix B), N counted with tied embeddings once."""
    from transformers import AutoConfig

    from cprec_core.models import load_causal_lm

    config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
    model, _ = load_causal_lm(model_dir)
    n = sum(p.numel() for p in model.parameters())
    return 6.0 * n + 12.0 * config.num_hidden_layers * seq_len * config.hidden_size


def _run(config: str, stages: str, overrides: list[str]) -> dict[str, Any]:
    from flows.cprec import cprec

    return cprec(config=config, stages=stages, overrides=overrides)


def gpu_check(out: Path, smoke: bool, steps: int, peak_tflops: float) -> dict[str, Any]:
    import torch

    from cprec_core.config import load_config
    from cprec_core.paths import cpt_dir

    out.mkdir(parents=True, exist_ok=True)
    gpu = torch.cuda.is_available()
    if not smoke and not gpu:
        raise SystemExit("gpu_check: no CUDA device here; use --smoke for the CPU path")
    root = (out / "root").resolve()
    if smoke:
        config = str(ROOT / "configs" / "demo.yaml")
        common = [
            f"paths.root={root}",
            f"synth.out_dir={out / 'raw'}",
            f"ingest.sources.0.path={out / 'raw'}",
            "synth.n_users=150",
            "synth.n_items_per_domain=40",
            "synth.n_interactions=4000",
            "behaviors.k_core=2",
            "model.tiny.pretrain_steps=4",
            "cpt.probe_max_docs=10",
        ]
        domain = "Grocery"
    else:
        if not (SMOLLM2 / "config.json").is_file():
            raise SystemExit(f"gpu_check: {SMOLLM2} missing: run `make base-model` first")
        from cprec_core.realdata import prepare_realdata

        raw = out / "raw"
        prepare_realdata(ROOT.parent / "shared" / "data", raw)
        config = str(ROOT / "configs" / "realdata.yaml")
        common = [
            f"paths.root={root}",
            f"ingest.sources.0.path={raw}",
            "ingest.sources.0.domains=[Arts,Office,Scientific]",
            "domains.downstream=[Scientific]",
            f"model.path={SMOLLM2}",
            "cpt.precision=bf16",
            "cpt.launcher.kind=deepspeed",
            "cpt.launcher.num_gpus=1",
            "cpt.micro_batch_size=16",
            "cpt.probe_max_docs=100",
        ]
        domain = "Scientific"
    cfg = load_config(config, common)
    results: dict[str, Any] = {"device": torch.cuda.get_device_name(0) if gpu else "cpu", "smoke": smoke}
    started = time.perf_counter()
    _run(config, "ingest,behaviors,corpus,pack", common)
    results["data_seconds"] = round(time.perf_counter() - started, 1)
    seq_len = cfg.pack.seq_len
    for zero, n_steps in ((2, steps), (3, max(4, steps // 20))):
        name = f"gpu-zero{zero}"
        over = [*common, f"name={name}", f"cpt.zero_stage={zero}", f"cpt.max_steps={n_steps}"]
        over += [f"cpt.checkpoint_every={n_steps}", f"cpt.log_every={max(1, n_steps // 10)}"]
        t0 = time.perf_counter()
        _run(config, "cpt", over)
        run_cfg = load_config(config, over)
        summary = json.loads((cpt_dir(run_cfg) / "summary.json").read_text())
        per_token = flops_per_token(cpt_dir(run_cfg), seq_len)
        achieved = summary["tokens_per_s"] * per_token / 1e12
        results[f"cpt_zero{zero}"] = {
            "steps": summary["steps"],
            "tokens": summary["tokens"],
            "tokens_per_s": round(summary["tokens_per_s"], 1),
            "tflops_per_s": round(achieved, 3),
            "mfu": round(achieved / peak_tflops, 4) if gpu else None,
            "peak_gpu_memory_gib": summary.get("peak_gpu_memory_gib"),
            "final_loss": summary["final_loss"],
            "probe_target_perplexity": [
                summary["probe_target_perplexity_before"],
                summary["probe_target_perplexity_after"],
            ],
            "wall_seconds": round(time.perf_counter() - t0, 1),
        }
    ft = [
        *common,
        "name=gpu-zero2",
        "cpt.zero_stage=2",
        f"cpt.max_steps={steps}",
        f"cpt.checkpoint_every={steps}",
        f"cpt.log_every={max(1, steps // 10)}",
        "finetune.variants=[cpt-full]",
        "finetune.max_epochs=1",
        "evaluate.seeds=[0]",
    ]
    t0 = time.perf_counter()
    _run(config, "finetune", ft)
    from cprec_core.rec.finetune import load_runs

    (run,) = load_runs(load_config(config, ft))["runs"]
    results["finetune_full_one_epoch"] = {
        "domain": domain,
        "seconds_per_epoch": run["seconds_per_epoch"],
        "valid_ndcg_at_10": run["valid"]["NDCG@10"],
        "llm_params_trained": run["item_encoder"]["llm_params_trained"],
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "gpu-check")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny model, synthetic data (CI)")
    parser.add_argument("--steps", type=int, default=None, help="ZeRO-2 CPT steps (default 300; smoke 4)")
    parser.add_argument("--peak-tflops", type=float, default=H200_BF16_TFLOPS)
    args = parser.parse_args()
    steps = args.steps or (4 if args.smoke else 300)
    args.out.mkdir(parents=True, exist_ok=True)
    log = io.StringIO()

    class Tee(io.TextIOBase):
        def __init__(self, stream: Any) -> None:
            self.stream = stream

        def write(self, text: str) -> int:
            log.write(text)
            return self.stream.write(text)

        def flush(self) -> None:
            self.stream.flush()

    from prefect.logging.configuration import ensure_logging_setup

    ensure_logging_setup()  # Prefect's dictConfig first: run later, it would drop our handler
    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    logging.getLogger("prefect").addHandler(handler)  # every flow and task run log line
    with contextlib.redirect_stdout(Tee(sys.stdout)):
        results = gpu_check(args.out, args.smoke, steps, args.peak_tflops)
    results["command"] = shlex.join([".venv/bin/python", "-m", "bench.gpu_check", *sys.argv[1:]])
    (args.out / "gpu_check.log").write_text(log.getvalue())
    (args.out / "gpu_check.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
