"""The unified, purely textual, domain-agnostic prompt template (PAPER.md §1).

Reads nothing and writes nothing: pure functions that turn item texts into documents. The corpus
stage (cprec_core/corpus.py) renders silver.events / silver.mixed into gold.corpus and gold.probe
with them, and the downstream recommender encodes items with the same `item_text`, so the text an
item has during CPT and during fine-tuning cannot drift apart.

A domain document::

    A user's interactions in Books, in time order:
    1. The Hobbit (Fantasy)
    2. Dune

A mixed document names each line's domain::

    A user's interactions across domains, in time order:
    1. [Books] The Hobbit (Fantasy)
    2. [Toys] Lego Castle (Building Sets)

User ids, item ids and ratings never reach the text. User-controlled text (titles, categories) is
cleaned to one line and concatenated, never passed through `str.format`, so braces and markup in
a title are rendered literally.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

MIXED_HEADER = "A user's interactions across domains, in time order:"
ELLIPSIS = "…"
UNTITLED = "(untitled)"  # an item whose title is empty once cleaned: keeps one line per item

# Every Unicode whitespace (this includes the line and paragraph separators that str.splitlines
# honours) and every C0/C1 control character collapses to one space; lone surrogates cannot be
# encoded as UTF-8 and are dropped.
_SPACES = re.compile(r"[\s\x00-\x1f\x7f-\x9f]+")
_SURROGATES = re.compile(r"[\ud800-\udfff]")


def clean_text(text: str | None) -> str:
    """One line of text: whitespace and control runs become one space, ends stripped."""
    if not text:
        return ""
    return _SPACES.sub(" ", _SURROGATES.sub("", text)).strip()


def cut_text(text: str, max_chars: int) -> str:
    """Cut `text` to at most `max_chars` characters, ending in '…' when cut.

    The cut falls on the last space of the kept part when that space lies in its second half
    (so a word is not split), otherwise mid-word.
    """
    if max_chars < 2:
        raise ValueError(f"max_chars={max_chars}: must be >= 2 (room for one character and '…')")
    if len(text) <= max_chars:
        return text
    head = text[: max_chars - 1]
    space = head.rfind(" ")
    if space >= (max_chars - 1) // 2:
        head = head[:space]
    return head.rstrip() + ELLIPSIS


def domain_label(domain: str) -> str:
    """How a domain name reads in text: 'Cell_Phones_and_Accessories' -> 'Cell Phones and Accessories'."""
    return clean_text(domain.replace("_", " "))


def domain_header(domain: str) -> str:
    """The first line of a domain document."""
    return f"A user's interactions in {domain_label(domain)}, in time order:"


def item_text(title: str | None, category: str | None, max_chars: int) -> str:
    """An item as one line: 'title (category)', or 'title' when the category is null or empty.

    Title and category are each cleaned to one line and cut to `max_chars` characters.
    """
    text = cut_text(clean_text(title), max_chars) or UNTITLED
    cat = cut_text(clean_text(category), max_chars)
    return f"{text} ({cat})" if cat else text


def mixed_item_text(domain: str, title: str | None, category: str | None, max_chars: int) -> str:
    """An item line of a mixed document: '[domain] title (category)'."""
    return f"[{domain_label(domain)}] {item_text(title, category, max_chars)}"


def number_lines(header: str, lines: Sequence[str]) -> str:
    """Join a header and item lines numbered from 1 into a document (no trailing newline).

    `lines` must already be single-line texts from `item_text` / `mixed_item_text`.
    """
    body = "\n".join(f"{i}. {line}" for i, line in enumerate(lines, 1))
    return f"{header}\n{body}" if body else header


def split_document(text: str) -> tuple[str, list[str]]:
    """The inverse of `number_lines`: (header, item lines without their numbers)."""
    header, *numbered = text.split("\n")
    return header, [line.split(". ", 1)[1] for line in numbered]


def render_domain_document(
    domain: str, items: Iterable[tuple[str | None, str | None]], max_title_chars: int
) -> str:
    """Render one domain document from (title, category) pairs in time order."""
    return number_lines(domain_header(domain), [item_text(t, c, max_title_chars) for t, c in items])


def render_mixed_document(items: Iterable[tuple[str | None, str | None, str]], max_title_chars: int) -> str:
    """Render one mixed document from (title, category, domain) triples in time order."""
    return number_lines(MIXED_HEADER, [mixed_item_text(d, t, c, max_title_chars) for t, c, d in items])
