"""The unified prompt template (cprec_core/prompts.py, PAPER.md §1): exact strings, hostile titles."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cprec_core.prompts import (
    MIXED_HEADER,
    UNTITLED,
    clean_text,
    cut_text,
    domain_header,
    item_text,
    mixed_item_text,
    render_domain_document,
    render_mixed_document,
)


def test_domain_document_exact() -> None:
    doc = render_domain_document("Books", [("The Hobbit", "Fantasy"), ("Dune", None)], max_title_chars=80)
    assert doc == "A user's interactions in Books, in time order:\n1. The Hobbit (Fantasy)\n2. Dune"


def test_mixed_document_exact() -> None:
    doc = render_mixed_document(
        [("The Hobbit", "Fantasy", "Books"), ("Lego Castle", None, "Toys"), ("Kettle", "", "Home")],
        max_title_chars=80,
    )
    assert doc == (
        "A user's interactions across domains, in time order:\n"
        "1. [Books] The Hobbit (Fantasy)\n"
        "2. [Toys] Lego Castle\n"
        "3. [Home] Kettle"
    )


def test_domain_names_read_as_words() -> None:
    assert domain_header("Cell_Phones_and_Accessories") == (
        "A user's interactions in Cell Phones and Accessories, in time order:"
    )
    assert mixed_item_text("Video_Games", "Tetris", None, 80) == "[Video Games] Tetris"


def test_empty_sequence_is_header_only() -> None:
    assert render_mixed_document([], max_title_chars=80) == MIXED_HEADER


@pytest.mark.parametrize(
    ("text", "max_chars", "expected"),
    [
        ("abcdefgh", 8, "abcdefgh"),  # fits exactly: untouched
        # head = text[:11] = "The quick b"; last space at 9 >= 11 // 2 -> cut there: "The quick…" (10)
        ("The quick brown fox jumps", 12, "The quick…"),
        ("Supercalifragilistic", 8, "Superca…"),  # no space: 7 characters + '…' = 8
        # head = "A Superca"; its only space is at 1 < 9 // 2: a word cut beats a 2-character title
        ("A Supercalifragilistic", 10, "A Superca…"),
    ],
)
def test_cut_text(text: str, max_chars: int, expected: str) -> None:
    assert cut_text(text, max_chars) == expected
    assert len(cut_text(text, max_chars)) <= max_chars


def test_hostile_titles_render_literally() -> None:
    braces = "{title} {0} {{x}} {domain} %s ${x}"
    assert item_text(braces, "{category}", 80) == f"{braces} ({{category}})"
    markup = "<b>Bold</b> &amp; <script>alert(1)</script>"
    assert item_text(markup, None, 80) == markup  # 44 characters: not cut, entities not decoded
    # newlines, CR, tabs, NUL, vertical tab, the Unicode line/paragraph separators: one space each run
    messy = "Line1\nLine2\r\n\tTab\x00Nul\x0bVt\u2028Sep\u2029Par\x85Nel   end "
    assert clean_text(messy) == "Line1 Line2 Tab Nul Vt Sep Par Nel end"
    doc = render_domain_document("Books", [(messy, "Cat\negory")], max_title_chars=80)
    assert doc.splitlines() == [
        domain_header("Books"),
        "1. Line1 Line2 Tab Nul Vt Sep Par Nel end (Cat egory)",
    ]


def test_huge_title_is_cut_on_a_word() -> None:
    title = "word " * 2000  # 10,000 characters
    line = item_text(title, "x" * 10_000, 80)
    # title: head = 79 chars "word word ... wor" -> cut at its last space (75) -> 15 words + '…' (75 chars)
    # category: 79 x's + '…'
    assert line == ("word " * 15).rstrip() + "… (" + "x" * 79 + "…)"
    assert len(render_domain_document("Books", [(title, None)] * 3, max_title_chars=80).splitlines()) == 4


def test_empty_title_gets_a_placeholder() -> None:
    assert item_text(" \n\t ", None, 80) == UNTITLED
    assert item_text(None, "Cat", 80) == f"{UNTITLED} (Cat)"


def test_cut_needs_room() -> None:
    with pytest.raises(ValueError, match="max_chars=1"):
        cut_text("abc", 1)


# Any Unicode, surrogates and control characters included.
ANY_TEXT = st.text(alphabet=st.characters(exclude_categories=()), max_size=200)


@settings(max_examples=200, deadline=None)
@given(
    items=st.lists(
        st.tuples(ANY_TEXT, st.one_of(st.none(), ANY_TEXT), st.sampled_from(["Books", "Toys"])),
        min_size=1,
        max_size=25,
    ),
    max_chars=st.integers(min_value=8, max_value=120),
)
def test_renderer_property(items: list[tuple[str, str | None, str]], max_chars: int) -> None:
    for doc, header in (
        (render_domain_document("Books", [(t, c) for t, c, _ in items], max_chars), domain_header("Books")),
        (render_mixed_document(items, max_chars), MIXED_HEADER),
    ):
        lines = doc.splitlines()
        assert doc.split("\n") == lines  # no other line separator survives
        assert len(lines) == len(items) + 1 and lines[0] == header
        for i, line in enumerate(lines[1:], 1):
            assert re.match(rf"{i}\. \S", line), line  # numbered 1..n, text starts right after
            # "[Books] " (8) + title (<= max, or the placeholder) + " (" + category (<= max) + ")"
            assert len(line) <= len(f"{i}. ") + 8 + max(max_chars, len(UNTITLED)) + max_chars + 3
        doc.encode("utf-8")  # no lone surrogates
