"""CPT data: packed token blocks and a deterministic, resumable, rank-sharded sampler.

Reads GOLD_PACKED (manifest verified); writes nothing. Implements PAPER.md §4's input: causal-LM
blocks of pack.seq_len tokens, labels = input_ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from cprec_core.artifacts import read_table
from cprec_core.schema import GOLD_PACKED


def load_blocks(root: Path) -> np.ndarray:
    """All packed blocks as an int32 array of shape (n_blocks, seq_len) (4 bytes per token)."""
    table = read_table(GOLD_PACKED, root)
    if table.num_rows == 0:
        raise ValueError(
            f"{GOLD_PACKED.path(root)}: no packed blocks; rerun the pack stage on a larger corpus"
        )
    col = table["input_ids"].combine_chunks()
    lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
    if (lengths != lengths[0]).any():
        bad = int(np.flatnonzero(lengths != lengths[0])[0])
        raise ValueError(
            f"{GOLD_PACKED.path(root)} row {bad}: field input_ids: {lengths[bad]} tokens, "
            f"expected {lengths[0]} like row 0 (blocks must all be pack.seq_len long)"
        )
    values = col.flatten().to_numpy(zero_copy_only=False)
    return values.reshape(len(lengths), int(lengths[0]))


def check_blocks(blocks: np.ndarray, root: Path, vocab_size: int, max_positions: int | None) -> None:
    """Fail before training when the blocks do not fit the model (another tokenizer, too long)."""
    top = int(blocks.max())
    if top >= vocab_size:
        raise ValueError(
            f"{GOLD_PACKED.path(root)}: token id {top} >= the base model's vocab size {vocab_size}: "
            "the corpus was packed with a different tokenizer; rerun the pack stage with this model's"
        )
    if max_positions is not None and blocks.shape[1] > max_positions:
        raise ValueError(
            f"{GOLD_PACKED.path(root)}: blocks of pack.seq_len={blocks.shape[1]} tokens exceed the base "
            f"model's max_position_embeddings={max_positions}; lower pack.seq_len and rerun the pack stage"
        )


@dataclass(frozen=True)
class Position:
    """Where the sampler stands: epoch, and index of the next global micro batch in it."""

    epoch: int = 0
    batch: int = 0


class BlockSampler:
    """Per epoch, shuffle all blocks with (seed, epoch); cut into global micro batches of
    micro_batch_size x world_size blocks (the tail that does not fill one is dropped); rank r
    takes the r-th micro_batch_size slice. One process with micro batch 4 thus sees exactly the
    blocks two processes with micro batch 2 see together.
    """

    def __init__(self, n_blocks: int, micro_batch_size: int, world_size: int, rank: int, seed: int) -> None:
        self.n_blocks = n_blocks
        self.micro = micro_batch_size
        self.world = world_size
        self.rank = rank
        self.seed = seed
        self.batches_per_epoch = n_blocks // (micro_batch_size * world_size)
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"gold/packed has {n_blocks} blocks, fewer than one global micro batch "
                f"(cpt.micro_batch_size={micro_batch_size} x {world_size} processes): "
                "lower cpt.micro_batch_size or pack a larger corpus"
            )
        self._perm_epoch = -1
        self._perm = np.empty(0, dtype=np.int64)

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n_blocks)
            self._perm_epoch = epoch
        return self._perm

    def indices(self, pos: Position) -> np.ndarray:
        """Block indices of this rank's micro batch at `pos`."""
        start = (pos.batch * self.world + self.rank) * self.micro
        return self._permutation(pos.epoch)[start : start + self.micro]

    def advance(self, pos: Position) -> Position:
        """The position after `pos`."""
        if pos.batch + 1 < self.batches_per_epoch:
            return Position(pos.epoch, pos.batch + 1)
        return Position(pos.epoch + 1, 0)
