"""Held-out perplexity probe: how well a causal LM predicts documents it never trained on.

Reads GOLD_PROBE (documents ending at each user's valid event; never in the CPT corpus); writes
nothing. Measured before and after CPT (PAPER.md §4: the CPT objective is next-token loss, so
lower held-out perplexity means the behaviour knowledge was absorbed, not memorised).
"""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow.compute as pc
import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from cprec_core.artifacts import read_table
from cprec_core.schema import GOLD_PROBE
from cprec_core.tokenize import tokenize_documents


def probe_texts(root: Path, max_docs: int) -> list[str]:
    """The first `max_docs` probe documents by doc_id (a fixed, reproducible subset)."""
    table = read_table(GOLD_PROBE, root, columns=["doc_id", "text"])
    if table.num_rows == 0:
        raise ValueError(f"{GOLD_PROBE.path(root)}: no probe documents; set cpt.probe_max_docs=0 to skip")
    table = table.take(pc.sort_indices(table, sort_keys=[("doc_id", "ascending")]))
    return table["text"].to_pylist()[:max_docs]


def _windows(token_lists: list[list[int]], seq_len: int) -> list[list[int]]:
    """Cut each document into consecutive windows of <= seq_len tokens (>= 2, so one is predicted)."""
    out = []
    for ids in token_lists:
        out.extend(
            ids[i : i + seq_len] for i in range(0, len(ids), seq_len) if len(ids[i : i + seq_len]) >= 2
        )
    return out


@torch.no_grad()
def perplexity(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    seq_len: int,
    batch_size: int,
) -> float:
    """exp(mean next-token negative log-likelihood) over every predicted token of `texts`.

    Each document is encoded as in the packed stream (its tokens, then EOS) and cut into windows
    of seq_len tokens; within a window tokens 2..n are predicted. The mean is over tokens.
    """
    windows = _windows(tokenize_documents(texts, tokenizer), seq_len)
    if not windows:
        raise ValueError("perplexity: no document has 2 or more tokens")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    nll, count = 0.0, 0
    for start in range(0, len(windows), batch_size):
        batch = windows[start : start + batch_size]
        width = max(len(w) for w in batch)
        input_ids = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        for i, w in enumerate(batch):
            input_ids[i, : len(w)] = torch.tensor(w)
            mask[i, : len(w)] = 1
        input_ids, mask = input_ids.to(device), mask.to(device)
        logits = model(input_ids=input_ids, attention_mask=mask).logits.float()
        targets = input_ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
        nll += F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.size(-1)),
            targets.reshape(-1),
            ignore_index=-100,
            reduction="sum",
        ).item()
        count += int((targets != -100).sum())
    model.train(was_training)
    return math.exp(nll / count)
