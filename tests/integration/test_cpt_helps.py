"""The paper's central claim on synthetic data: CPT on other domains helps an unseen domain.

The synthetic users follow latent cross-domain themes, each a family of three interchangeable
words; consecutive items of a user share a theme most of the time. The base LLM is a small
*general* LM (model.tiny.pretrain_steps: item lines in random order, no behaviour), so it knows
how item text reads but not which themes go together. CPT on the pre-training domains' behaviour
sequences teaches what comes next after an item; the item encoder reads the last-token state
(finetune.item_pooling=last), the state that predicts the next item, standardised per dimension
over the catalogue. So `cpt` item embeddings of the never-seen Grocery domain already group items
by theme, while `base` ones must learn it from Grocery's own (sparse) training events.

Runs the real flow in-process (all stages) on a small config at one seed, and checks that cpt
beats base on test NDCG@10 by a margin and that the report carries the paired p-value.

STATUS: the claim does NOT hold yet, so the test is a strict xfail (it starts failing, as XPASS,
the day cpt wins, and the margin must then be re-measured). Measured on this config, seed 0:
test NDCG@10 cpt 0.157 vs base 0.203 (228 users, 1,602 train events; 15 min wall under a load
average of 8 on the 2-core box). On the demo config (general base 100 steps, CPT 100 steps at
peak LR 3e-3, last pooling): cpt 0.204 / 0.218 / 0.205 (seeds 0-2) vs base 0.316 (seed 0). The
CPT item states DO group Grocery items by theme better (5-NN theme purity of the standardised
embeddings 0.326 vs base 0.179, chance 0.083), but the user model needs item identity more than
theme grouping at this data size, and the base states keep more of it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow.compute as pc
import pytest

from cprec_core.artifacts import read_table
from cprec_core.config import Config, load_config
from cprec_core.schema import REPORT_METRICS

MARGIN = 0.03  # to be re-measured once cpt wins; seed-to-seed std of cpt on the demo is ~0.008


def small_config(tmp: Path) -> Config:
    return load_config(
        None,
        [
            "name=cpthelps",
            f"paths.root={tmp / 'root'}",
            f"synth.out_dir={tmp / 'raw'}",
            "synth.n_users=600",
            "synth.n_items_per_domain=60",
            "synth.n_interactions=12000",
            f"ingest.sources=[{{format: synthetic, path: {tmp / 'raw'}}}]",
            "behaviors.k_core=3",
            "pack.seq_len=128",
            "model.tiny.hidden_size=64",
            "model.tiny.intermediate_size=128",
            "model.tiny.num_heads=2",
            "model.tiny.vocab_size=1024",
            "model.tiny.pretrain_steps=60",
            "cpt.max_steps=60",
            "cpt.micro_batch_size=8",
            "cpt.checkpoint_every=60",
            "cpt.schedule.peak_lr=0.003",
            "finetune.variants=[cpt,base]",
            "finetune.item_pooling=last",
            "finetune.max_epochs=10",
            "evaluate.seeds=[0]",
        ],
    )


@pytest.mark.experiment  # ~15 min on 2 loaded cores: run with `pytest -m experiment`, not in CI
@pytest.mark.xfail(strict=True, reason="measured cpt 0.157 < base 0.203 NDCG@10: see the module docstring")
def test_cpt_beats_base_on_the_unseen_domain(prefect_harness, tmp_path: Path) -> None:
    from flows.cprec import cprec

    cfg = small_config(tmp_path)
    state = cprec(config=cfg.model_dump(mode="json"), stages="all", return_state=True)
    assert state.is_completed()

    report_dir = cfg.root / "reports" / cfg.name
    metrics = read_table(REPORT_METRICS, report_dir)
    test = metrics.filter(pc.and_(pc.equal(metrics["split"], "test"), pc.equal(metrics["metric"], "NDCG@10")))
    ndcg = dict(zip(test["variant"].to_pylist(), test["value"].to_pylist(), strict=True))
    assert ndcg["cpt"] > ndcg["base"] + MARGIN, ndcg

    report = (report_dir / "report.md").read_text()
    row = re.search(r"^\| cpt vs base \|.*\| wilcoxon \| ([0-9.e+-]+) \|", report, flags=re.M)
    assert row is not None, "the report has no cpt-vs-base significance row"
    assert 0.0 <= float(row.group(1)) <= 1.0
