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


def test_every_error_a_user_can_fix_is_one_line_in_the_cli() -> None:
    """Each exception class of the library and the flows is a UserError (which the CLI prints in one
    line with exit 2), but the internal signals named here."""
    import importlib
    import pkgutil

    import cprec_core
    import flows
    from cprec_core.errors import UserError

    internal = {  # never reach a user as an error
        "RowError": "a reader's per-row reason, quarantined",
        "Interrupted": "a test's resume signal",
        "LockBusy": "another run holds the lock: refresh reports 'busy'",
        "RefreshBusy": "the same, for refresh",
    }
    found = {}
    for package in (cprec_core, flows):
        for mod in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            module = importlib.import_module(mod.name)
            for name, obj in vars(module).items():
                if isinstance(obj, type) and issubclass(obj, Exception) and obj.__module__ == mod.name:
                    found[name] = obj
    assert {"BehaviorsError", "CorpusError", "ModelError", "CPTError", "HandOffFailed"} <= set(found)
    assert set(internal) <= set(found)  # the list above stays true
    assert [n for n, c in found.items() if n not in internal and not issubclass(c, UserError)] == []


def test_a_stage_error_inside_the_flow_is_one_line_and_exit_2(tmp_path: Path) -> None:
    import subprocess
    import sys

    missing = tmp_path / "no-model"
    cmd = [Path(sys.executable).with_name("cprec"), "run", "--stages", "pack"]
    cmd += ["--set", f"paths.root={tmp_path}", "--set", f"model.path={missing}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    printed = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.startswith("error:")]
    assert printed == [f"error: model.path={missing}: does not exist (a local HF directory or a .gguf file)"]


def test_synth_settings_are_checked_at_load_naming_the_keys(tmp_path: Path) -> None:
    args = ["synth", "--set", f"synth.out_dir={tmp_path}", "--set", "synth.n_items_per_domain=10"]
    line = one_error_line(runner.invoke(app, [*args, "--set", "synth.n_themes=12"]))
    assert "synth.n_items_per_domain=10 must be >= synth.n_themes=12" in line
    assert not list(tmp_path.iterdir())  # nothing was written


def test_synth_turns_a_user_error_into_one_line(tmp_path: Path, monkeypatch) -> None:
    import cprec_core.ingest.synth as synth
    from cprec_core.errors import UserError

    def refuse(out_dir: Path, cfg: object) -> bool:
        raise UserError(f"{out_dir}: cannot write here")

    monkeypatch.setattr(synth, "ensure_synthetic", refuse)
    line = one_error_line(runner.invoke(app, ["synth", "--set", f"synth.out_dir={tmp_path}"]))
    assert line == f"error: {tmp_path}: cannot write here"
