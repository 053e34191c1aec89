"""A stage's summary reaches the run log as one short line; the whole of it is an artifact."""

from __future__ import annotations

from tasks.common import headline


def test_the_headline_keeps_the_scalars_and_stays_short() -> None:
    summary = {
        "documents_total": 29149,
        "mix_ratio_achieved": 0.49999770458542186,
        "shuffled_lines": False,
        "documents": {"Arts": 9566, "Office": 9233},  # nested: in the artifact only
        "corpus_fingerprint": "3fad" * 16,  # a 64-character hash is kept, a longer string is not
        "notes": "x" * 81,
    }
    assert headline(summary) == (
        "documents_total=29149, mix_ratio_achieved=0.5, shuffled_lines=False, "
        f"corpus_fingerprint={'3fad' * 16}"
    )
    long = headline({f"k{i}": i for i in range(200)})
    assert len(long) == 300 and long.endswith("...")
    assert headline({"per_domain": {"A": 1}}) == "1 entries"


def test_a_failed_gx_suite_in_a_stage_is_a_one_line_user_error(tmp_path, monkeypatch) -> None:
    import pyarrow as pa
    import pytest

    import tasks.common as common
    from cprec_core.artifacts import write_table
    from cprec_core.config import load_config
    from cprec_core.errors import UserError
    from cprec_core.schema import BRONZE_INTERACTIONS
    from cprec_core.validate import ValidationFailed

    published = []
    monkeypatch.setattr(common, "get_run_logger", lambda: None)
    monkeypatch.setattr(common, "create_markdown_artifact", lambda **kw: published.append(kw))
    bad = {"user_id": ["u1", "u2"], "item_id": ["i", "i"], "ts": [50, 20], "rating": [1.0, 9.0]}
    write_table(
        BRONZE_INTERACTIONS,
        tmp_path,
        pa.table({**bad, "source_line": [1, 2], "domain": ["Books", "Books"]}),
    )
    run = common.StageRun("ingest", load_config(None, [f"paths.root={tmp_path}", "ingest.min_ts=100"]))
    with pytest.raises(ValidationFailed) as err:
        run.validate(BRONZE_INTERACTIONS)
    assert isinstance(err.value, UserError)  # the CLI prints it as one line and exits 2
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{BRONZE_INTERACTIONS.name}: 2 expectation(s) failed: ")
    assert "column='ts'" in message and "column='rating'" in message
    assert len(published) == 1  # the full report is still attached to the task run
