"""Real CPT runs through the launcher on a tiny Llama (CPU, fp32, gloo): each test launches torchrun.

One reference run (1 process, ZeRO-2, 30 steps) is shared; the others are compared with it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
from cpt_fixtures import base_dir, make_workspace, with_cpt
from transformers import AutoModelForCausalLM, AutoTokenizer

from cprec_core.artifacts import verify
from cprec_core.config import Config
from cprec_core.cpt.launcher import (
    CPTError,
    build_launch_command,
    free_port,
    job_spec,
    launch_env,
    launch_job,
    prepare_work_dir,
    run_cpt,
)
from cprec_core.cpt.probe import perplexity, probe_texts
from cprec_core.cpt.train import LOG_FILE, PLOT_FILE, SUMMARY_FILE
from cprec_core.schedule import lr_lambda

pytestmark = pytest.mark.slow


def _log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Config:
    return make_workspace(tmp_path_factory.mktemp("cpt"))


@pytest.fixture(scope="module")
def reference_cpt_run(workspace: Config) -> tuple[dict[str, Any], Path]:
    out = workspace.root / "models" / "ref"
    return run_cpt(workspace, base_dir(workspace), out, progress=False), out


def test_loss_falls_and_lr_follows_the_schedule(
    workspace: Config, reference_cpt_run: tuple[dict, Path]
) -> None:
    summary, out = reference_cpt_run
    log = _log(out / LOG_FILE)
    assert [r["step"] for r in log] == list(range(1, 31))  # log_every=1
    first, last = sum(r["loss"] for r in log[:5]) / 5, sum(r["loss"] for r in log[-5:]) / 5
    assert last < first - 1.0, (first, last)
    # step s (1-based) trains with LR peak x lr_lambda(s - 1): warmup 1/3, 2/3, 1 (W = 3), ...
    schedule = lr_lambda(30, workspace.cpt.schedule)
    peak = workspace.cpt.schedule.peak_lr
    assert [r["lr"] for r in log] == pytest.approx([peak * schedule(s - 1) for s in range(1, 31)], rel=1e-9)
    assert log[0]["lr"] == pytest.approx(peak / 3)
    assert log[-1]["lr"] == pytest.approx(0.1 * peak)  # final_lr_ratio
    assert all(r["grad_norm"] > 0 and r["tokens_per_s"] > 0 for r in log)
    assert summary["steps"] == 30
    assert summary["tokens"] == log[-1]["tokens"] == 30 * 4 * 32  # steps x micro batch x seq_len
    assert summary["final_loss"] == log[-1]["loss"]
    assert summary["tokens_per_s"] > 0 and summary["wall_time_s"] > 0
    assert (out / PLOT_FILE).read_bytes()[:4] == b"\x89PNG"
    assert verify(out, deep=True).extra["steps"] == 30


def test_output_reloads_with_from_pretrained(workspace: Config, reference_cpt_run: tuple[dict, Path]) -> None:
    summary, out = reference_cpt_run
    model = AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(out, local_files_only=True)
    base = AutoModelForCausalLM.from_pretrained(base_dir(workspace), local_files_only=True)
    name = "model.layers.0.mlp.up_proj.weight"
    assert not torch.equal(model.get_parameter(name), base.get_parameter(name))  # it trained
    texts = probe_texts(workspace.root, 8)
    ppl = perplexity(model, tokenizer, texts, seq_len=32, batch_size=4)
    assert ppl == pytest.approx(summary["probe_perplexity_after"], rel=1e-5)
    assert summary["probe_perplexity_after"] < summary["probe_perplexity_before"]
    assert json.loads((out / SUMMARY_FILE).read_text()) == summary


def test_resume_is_exact_and_skips_a_corrupt_checkpoint(
    workspace: Config, reference_cpt_run: tuple[dict, Path], caplog: pytest.LogCaptureFixture
) -> None:
    ref_log = _log(reference_cpt_run[1] / LOG_FILE)
    out = workspace.root / "models" / "resumed"
    spec = job_spec(workspace, base_dir(workspace), out)
    launch_job(spec.model_copy(update={"stop_after_steps": 20}), workspace.cpt.launcher, progress=False)
    assert not out.exists()
    ckpts = spec.work_dir / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("step*")) == ["step00000010", "step00000020"]

    # The same stopped job, with its newest checkpoint truncated as by a crash mid-write.
    out_b = workspace.root / "models" / "fallback"
    spec_b = job_spec(workspace, base_dir(workspace), out_b)
    shutil.copytree(spec.work_dir, spec_b.work_dir)
    optim = next((spec_b.work_dir / "checkpoints" / "step00000020").glob("*optim_states.pt"))
    optim.write_bytes(optim.read_bytes()[:100])

    with caplog.at_level(logging.DEBUG, logger="cprec.cpt"):
        run_cpt(workspace, base_dir(workspace), out, progress=False)
        clean = caplog.text
        caplog.clear()
        run_cpt(workspace, base_dir(workspace), out_b, progress=False)
        fallback = caplog.text
    assert "at step 20 (epoch" in clean
    assert "step00000020 is incomplete or corrupt" in fallback
    assert "at step 10 (epoch" in fallback
    # the corrupt step 20 was deleted and saved again; pruning kept the two newest good ones
    kept = sorted(p.name for p in (spec_b.work_dir / "checkpoints").glob("step*"))
    assert kept == ["step00000020", "step00000030"]
    for resumed in (out, out_b):
        log = _log(resumed / LOG_FILE)
        assert [r["step"] for r in log] == list(range(1, 31))  # steps logged past the resume point dropped
        for got, want in zip(log, ref_log, strict=True):
            assert math.isclose(got["loss"], want["loss"], abs_tol=1e-6), (got, want)
            assert got["lr"] == want["lr"]


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_sigkill_mid_run_then_resume_is_exact(
    workspace: Config, reference_cpt_run: tuple[dict, Path]
) -> None:
    # SIGKILL the training process as soon as step 13 is logged (torchrun then fails, exit 1):
    # no clean-up runs; the resumed job must still reproduce the uninterrupted losses.
    out = workspace.root / "models" / "killed"
    spec = job_spec(workspace, base_dir(workspace), out)
    launcher = workspace.cpt.launcher.model_copy(update={"master_port": free_port()})
    argv = build_launch_command(launcher, ["--spec", str(prepare_work_dir(spec))])
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=launch_env(launcher),
        start_new_session=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("[cpt] step 13/30"):
                workers = _children(proc.pid)  # torchrun starts its workers in their own sessions
                assert len(workers) == 1
                os.kill(workers[0], signal.SIGKILL)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            for child in _children(proc.pid):
                os.kill(child, signal.SIGKILL)
            proc.kill()
            proc.wait()
    assert proc.returncode == 1  # torchrun: "cprec_core.cpt.entry FAILED" (worker killed)
    assert not out.exists()
    run_cpt(workspace, base_dir(workspace), out, progress=False)
    log, ref_log = _log(out / LOG_FILE), _log(reference_cpt_run[1] / LOG_FILE)
    assert [r["step"] for r in log] == list(range(1, 31))
    assert [r["loss"] for r in log] == pytest.approx([r["loss"] for r in ref_log], abs=1e-6)


def test_two_processes_match_one(workspace: Config, reference_cpt_run: tuple[dict, Path]) -> None:
    # Same global batch: 1 process x micro batch 4 vs 2 processes x micro batch 2 (same blocks, see
    # test_sampler_two_ranks_split_the_one_rank_batch); ZeRO-2 averages the two ranks' gradients.
    cfg = with_cpt(workspace, micro_batch_size=2, launcher={"nproc_per_node": 2})
    out = workspace.root / "models" / "two"
    summary = run_cpt(cfg, base_dir(cfg), out, progress=False)
    assert summary["processes"] == 2
    ref_log = _log(reference_cpt_run[1] / LOG_FILE)
    log = _log(out / LOG_FILE)
    assert [r["loss"] for r in log] == pytest.approx([r["loss"] for r in ref_log], abs=1e-4)
    assert summary["tokens"] == reference_cpt_run[0]["tokens"]


def test_gradient_accumulation_matches_one_big_micro_batch(
    workspace: Config, reference_cpt_run: tuple[dict, Path]
) -> None:
    # micro batch 2 x 2 accumulation steps consumes global micro batches 2k, 2k+1 of the micro-2
    # order = blocks perm[4k .. 4k+3], the reference's k-th micro batch of 4: same step, same loss.
    cfg = with_cpt(workspace, micro_batch_size=2, grad_accum_steps=2)
    spec = job_spec(cfg, base_dir(cfg), workspace.root / "models" / "accum")
    launch_job(spec.model_copy(update={"stop_after_steps": 6}), cfg.cpt.launcher, progress=False)
    log = _log(spec.work_dir / LOG_FILE)
    ref_log = _log(reference_cpt_run[1] / LOG_FILE)[:6]
    assert [r["tokens"] for r in log] == [r["tokens"] for r in ref_log]  # 128 tokens per step either way
    assert [r["loss"] for r in log] == pytest.approx([r["loss"] for r in ref_log], abs=1e-5)


def test_zero3_bf16_gradient_checkpointing_smoke_via_deepspeed_launcher(workspace: Config) -> None:
    cfg = with_cpt(
        workspace,
        zero_stage=3,
        precision="bf16",
        gradient_checkpointing=True,
        max_steps=4,
        probe_max_docs=0,
        launcher={"kind": "deepspeed"},
    )
    out = workspace.root / "models" / "zero3"
    summary = run_cpt(cfg, base_dir(cfg), out, progress=False)
    assert summary["zero_stage"] == 3 and summary["steps"] == 4
    assert summary["probe_perplexity_after"] is None
    log = _log(out / LOG_FILE)
    assert all(math.isfinite(r["loss"]) for r in log)
    model = AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    assert next(model.parameters()).dtype == torch.float32  # consolidated fp32 master weights


def test_a_failing_job_raises_with_the_childs_last_lines(workspace: Config) -> None:
    # 80 documents pack into far fewer than 1000 blocks: the child fails before training.
    cfg = with_cpt(workspace, micro_batch_size=1000)
    with pytest.raises(CPTError) as err:
        run_cpt(cfg, base_dir(cfg), workspace.root / "models" / "failing", progress=False)
    first, second = str(err.value).splitlines()[:2]
    assert first.startswith("[cpt] FAILED on rank 0: ValueError: gold/packed has ")
    assert "cpt.micro_batch_size=1000 x 1 processes" in first
    assert second.startswith("CPT launcher exited with code 1")
