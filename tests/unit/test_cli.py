"""The `cprec` CLI turns user errors into one line naming the problem, exit code 2."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from flows.cli import app

runner = CliRunner()


def one_error_line(result) -> str:
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1, result.output
    return lines[0]


def test_missing_config_file() -> None:
    assert one_error_line(runner.invoke(app, ["run", "--config", "nope.yaml"])) == (
        "error: config file nope.yaml does not exist"
    )


def test_unknown_stage_lists_the_allowed_ones() -> None:
    line = one_error_line(runner.invoke(app, ["run", "--stages", "ingest,bogus"]))
    assert (
        "stages ['bogus'] unknown; allowed: ingest, behaviors, corpus, pack, cpt, finetune, evaluate" in line
    )


def test_bad_override_names_key_and_value(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("corpus:\n  max_items: 20\n")
    line = one_error_line(runner.invoke(app, ["run", "--config", str(cfg), "--set", "corpus.max_items=abc"]))
    assert "corpus.max_items" in line and "got 'abc'" in line


def test_unknown_base_model() -> None:
    line = one_error_line(runner.invoke(app, ["base-model", "gpt-17"]))
    assert "base model 'gpt-17' unknown; available: smollm2-135m" in line
