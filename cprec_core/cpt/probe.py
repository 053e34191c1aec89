"""Held-out perplexity probe: how well a causal LM predicts documents it never trained on.

Reads GOLD_PROBE (documents ending at each user's valid event; never in the CPT corpus); writes
nothing. Measured before and after CPT (PAPER.md §4: the CPT objective is next-token loss). Two
numbers: `target_perplexity` scores only the held-out item's text given the user's train history
(the behaviour knowledge); `perplexity` scores every token of the documents, whose first lines are
train events the model may have read during CPT (the format and the catalogue's words).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pyarrow.compute as pc
import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from cprec_core.artifacts import read_table
from cprec_core.pack import tokenize_documents
from cprec_core.schema import GOLD_PROBE

NUMBER = re.compile(r"\d+\. ")  # the "N. " that numbers an item line (cprec_core.prompts.number_lines)


def probe_texts(root: Path, max_docs: int) -> list[str]:
    """The first `max_docs` probe documents by doc_id (a fixed, reproducible subset)."""
    table = read_table(GOLD_PROBE, root, columns=["doc_id", "text"])
    if table.num_rows == 0:
        raise ValueError(f"{GOLD_PROBE.path(root)}: no probe documents; set cpt.probe_max_docs=0 to skip")
    table = table.take(pc.sort_indices(table, sort_keys=[("doc_id", "ascending")]))
    return table["text"].to_pylist()[:max_docs]


def _windows(token_lists: list[list[int]], seq_len: int) -> list[tuple[list[int], list[bool]]]:
    """Cut each document into consecutive windows of <= seq_len tokens (>= 2, so one is predicted),
    every token a target."""
    out = []
    for ids in token_lists:
        for i in range(0, len(ids), seq_len):
            window = ids[i : i + seq_len]
            if len(window) >= 2:
                out.append((window, [True] * len(window)))
    return out


def held_out_start(text: str) -> int:
    """Character offset where the last line's item text begins (after its "N. " number, if any)."""
    line = text.rfind("\n") + 1
    number = NUMBER.match(text, line)
    return number.end() if number else line


def target_windows(
    texts: list[str], tokenizer: PreTrainedTokenizerBase, seq_len: int
) -> list[tuple[list[int], list[bool]]]:
    """Per document: its last seq_len tokens (as packed: tokens then EOS) and which of them are the
    held-out item's text (the final line after its number; not the EOS, not the number)."""
    out = []
    for text, ids in zip(texts, tokenize_documents(texts, tokenizer), strict=True):
        start = held_out_start(text)
        offsets = tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).offsets
        target = [end > start for _, end in offsets] + [False]  # a token reaching into the item's text
        out.append((ids[-seq_len:], target[-seq_len:]))
    return out


@torch.no_grad()
def _perplexity(
    model: PreTrainedModel, windows: list[tuple[list[int], list[bool]]], batch_size: int
) -> float:
    """exp(mean negative log-likelihood) of the target tokens of `windows` (a window's first token
    has no context and is never scored)."""
    if not windows or not any(any(t[1:]) for _, t in windows):
        raise ValueError("perplexity: no token to score")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    nll, count = 0.0, 0
    for start in range(0, len(windows), batch_size):
        batch = windows[start : start + batch_size]
        width = max(len(w) for w, _ in batch)
        input_ids = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        scored = torch.zeros(len(batch), width, dtype=torch.bool)
        for i, (w, t) in enumerate(batch):
            input_ids[i, : len(w)] = torch.tensor(w)
            mask[i, : len(w)] = 1
            scored[i, : len(w)] = torch.tensor(t)
        input_ids, mask, scored = input_ids.to(device), mask.to(device), scored.to(device)
        logits = model(input_ids=input_ids, attention_mask=mask).logits.float()
        targets = input_ids[:, 1:].masked_fill(~scored[:, 1:] | (mask[:, 1:] == 0), -100)
        nll += F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.size(-1)),
            targets.reshape(-1),
            ignore_index=-100,
            reduction="sum",
        ).item()
        count += int((targets != -100).sum())
    model.train(was_training)
    return math.exp(nll / count)


def perplexity(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    seq_len: int,
    batch_size: int,
) -> float:
    """All-token perplexity: every predicted token of `texts`, the train-history lines included.

    Each document is encoded as in the packed stream (its tokens, then EOS) and cut into windows
    of seq_len tokens; within a window tokens 2..n are predicted. The mean is over tokens.
    """
    return _perplexity(model, _windows(tokenize_documents(texts, tokenizer), seq_len), batch_size)


def target_perplexity(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    seq_len: int,
    batch_size: int,
) -> float:
    """Held-out perplexity: only the final (held-out, valid) item's text is scored, given the user's
    train history before it: how well the model predicts what this user did next."""
    return _perplexity(model, target_windows(texts, tokenizer, seq_len), batch_size)
