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
