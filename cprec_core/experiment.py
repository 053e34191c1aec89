"""The experiment: the paper's claims (PAPER.md, "Claims to check") measured in one run.

An experiment is three pipeline runs ("arms") of one config, then a combined report:
- `main`: every stage on the config as given (variants cpt, base, zero-shot, popularity, sasrec).
- `domain-only`: CPT on a corpus without mixed sequences (corpus.mix_ratio=0): Claim 2.
- `cosine`: CPT with a plain cosine schedule instead of WSA (cpt.schedule.kind=cosine): Claim 3.
An ablation arm changes that one setting and nothing else: it starts CPT from the main arm's base
model (model.path: the same weights and tokenizer), keeps the token budget, fine-tuning and
seeds, fine-tunes only `cpt`, and has its own run root (<root>/ablations/<arm>) and run name
(<name>-<arm>), so no artifact is shared or overwritten.

Reads each arm's reports/<name>/ (REPORT_METRICS, REPORT_PER_USER), its gold corpus and packed
manifests and its CPT summary.json. Writes <root>/reports/<name>-experiment/ atomically:
`metrics/` and `per_user/` (the ablation arms' cpt renamed `cpt-domain-only` / `cpt-cosine`),
`plots/metrics_<domain>.png` and `report.md`. Pure library code: the flow is flows/experiment.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from cprec_core.artifacts import (
    atomic_dir,
    code_version,
    config_hash,
    finish_manifest,
    read_table,
    verify,
    write_table,
)
from cprec_core.config import Config
from cprec_core.evaluate import (
    REFERENCE,
    TEST_NAMES,
    claim_verdict,
    holm,
    plot_metrics,
    significance,
    significance_table,
    summary_table,
    variant_text,
)
from cprec_core.metrics import PairedTest
from cprec_core.rec.item_encoder import checkpoint_fingerprint
from cprec_core.schema import (
    BRONZE_INTERACTIONS,
    GOLD_CORPUS,
    GOLD_PACKED,
    REPORT_METRICS,
    REPORT_PER_USER,
    SILVER_EVENTS,
)
from cprec_core.stages import base_model_dir, cpt_dir, report_dir


@dataclass(frozen=True)
class Ablation:
    """One setting changed against the main arm, and what that tests."""

    override: str
    text: str
    claim: str


ABLATIONS: dict[str, Ablation] = {
    "domain-only": Ablation(
        "corpus.mix_ratio=0",
        "CPT on domain-only sequences (no all-domain mixed sequences), same token budget, then "
        "fine-tuned exactly like cpt.",
        "Claim 2 (mixed sequences add to domain-only sequences)",
    ),
    "cosine": Ablation(
        "cpt.schedule.kind=cosine",
        "CPT with a plain cosine learning-rate schedule (same peak LR and warmup) instead of "
        "Warmup-Stable-Annealing, then fine-tuned exactly like cpt.",
        "Claim 3 (WSA beats a plain cosine schedule for CPT)",
    ),
}
ARMS = ("main", *ABLATIONS)
REQUIRED_VARIANTS = ("cpt", "base")


class ExperimentError(ValueError):
    """The config cannot serve as an experiment's main arm; the message says which key."""


def ablation_variant(arm: str) -> str:
    """The name an ablation arm's cpt variant has in the combined report."""
    return f"{REFERENCE}-{arm}"


def arm_overrides(cfg: Config, arm: str) -> list[str]:
    """The `--set` overrides that turn the main config into `arm` (none for main)."""
    if arm == "main":
        missing = [v for v in REQUIRED_VARIANTS if v not in cfg.finetune.variants]
        if missing:
            raise ExperimentError(f"finetune.variants must include {', '.join(missing)} for the claims")
        if cfg.corpus.mix_ratio == 0:
            raise ExperimentError("corpus.mix_ratio is 0: the main arm must use mixed sequences (Claim 2)")
        if cfg.cpt.schedule.kind != "wsa":
            raise ExperimentError(
                f"cpt.schedule.kind is {cfg.cpt.schedule.kind!r}: the main arm must use 'wsa' (Claim 3)"
            )
        return []
    if arm not in ABLATIONS:
        raise ExperimentError(f"arm {arm!r} unknown; arms: {', '.join(ARMS)}")
    return [
        f"name={cfg.name}-{arm}",
        f"paths.root={(cfg.root / 'ablations' / arm).resolve()}",
        f"model.path={base_model_dir(cfg).resolve()}",
        f"finetune.variants=[{REFERENCE}]",
        ABLATIONS[arm].override,
    ]


def experiment_dir(cfg: Config) -> Path:
    """Where the combined report lives: <root>/reports/<name>-experiment/."""
    return cfg.root / "reports" / f"{cfg.name}-experiment"


def _arm_tables(arms: dict[str, Config]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every arm's metrics and per-user rows, the ablation arms' cpt renamed.

    Raises ExperimentError when an arm's silver events differ from the main arm's: the paired
    tests compare the same users on the same held-out items, or nothing.
    """
    events = {arm: verify(SILVER_EVENTS.path(c.root)).fingerprint for arm, c in arms.items()}
    differ = [arm for arm, f in events.items() if f != events["main"]]
    if differ:
        raise ExperimentError(f"arms {', '.join(differ)}: silver.events differ from the main arm's")
    metrics, per_user = [], []
    for arm, cfg in arms.items():
        m = read_table(REPORT_METRICS, report_dir(cfg)).to_pandas()
        u = read_table(REPORT_PER_USER, report_dir(cfg)).to_pandas()
        if arm != "main":
            m, u = m[m.variant == REFERENCE].copy(), u[u.variant == REFERENCE].copy()
            m["variant"] = u["variant"] = ablation_variant(arm)
        metrics.append(m)
        per_user.append(u)
    return pd.concat(metrics, ignore_index=True), pd.concat(per_user, ignore_index=True)


def arm_facts(cfg: Config, seconds: float) -> dict[str, Any]:
    """What one arm pre-trained on and how CPT went: corpus, tokens, schedule, loss, perplexity."""
    corpus = verify(GOLD_CORPUS.path(cfg.root)).extra
    packed = verify(GOLD_PACKED.path(cfg.root)).extra
    cpt = json.loads((cpt_dir(cfg) / "summary.json").read_text())
    return {
        "documents": corpus["documents_total"],
        "characters": corpus["characters_total"],
        "mix_ratio": corpus["mix_ratio_achieved"],
        "corpus_tokens": packed["tokens"],
        "cpt_steps": cpt["steps"],
        "cpt_tokens": cpt["tokens"],
        "schedule": cfg.cpt.schedule.kind,
        "final_loss": cpt["final_loss"],
        "ppl_before": cpt["probe_perplexity_before"],
        "ppl_after": cpt["probe_perplexity_after"],
        "tokens_per_s": cpt["tokens_per_s"],
        "seconds": seconds,
    }


def _arms_table(facts: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| arm | CPT corpus documents | characters | mixed share | corpus tokens | CPT steps | CPT tokens "
        "| schedule | final loss | probe perplexity before → after | CPT tokens/s "
        "| arm wall time (cached stages take ~0) |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for arm, f in facts.items():
        lines.append(
            f"| {arm} | {f['documents']:,} | {f['characters']:,} | {f['mix_ratio']:.3f} | "
            f"{f['corpus_tokens']:,} | {f['cpt_steps']:,} | {f['cpt_tokens']:,} | {f['schedule']} | "
            f"{f['final_loss']:.3f} | {f['ppl_before']:.1f} → {f['ppl_after']:.2f} | "
            f"{f['tokens_per_s']:,.0f} | {f['seconds'] / 60:.1f} min |"
        )
    return "\n".join(lines)


def seed_table(metrics: pd.DataFrame, domain: str, variants: list[str]) -> str:
    """Test NDCG@10 of every variant at every seed (Claim 4: is the ordering stable?)."""
    part = metrics[(metrics.domain == domain) & (metrics.split == "test") & (metrics.metric == "NDCG@10")]
    wide = part.pivot_table(index="variant", columns="seed", values="value")
    seeds = list(wide.columns)
    lines = ["| variant | " + " | ".join(f"seed {s}" for s in seeds) + " |", "|---|" + "---:|" * len(seeds)]
    for v in variants:
        if v in wide.index:
            lines.append(f"| {v} | " + " | ".join(f"{wide.loc[v, s]:.4f}" for s in seeds) + " |")
    return "\n".join(lines)


def claims(
    metrics: pd.DataFrame, tests: dict[str, dict[str, PairedTest]], alpha: float
) -> list[tuple[str, str, str]]:
    """(claim, evidence, verdict) for PAPER.md's four claims, over every downstream domain."""
    rows = []
    checks = [("base", "Claim 1 (CPT then fine-tune beats fine-tune only)")]
    checks += [(ablation_variant(a), ab.claim) for a, ab in ABLATIONS.items()]
    for other, claim in checks:
        for domain, domain_tests in tests.items():
            if other not in domain_tests:
                continue
            t = domain_tests[other]
            p = holm([x.p_value for x in domain_tests.values()])[list(domain_tests).index(other)]
            evidence = f"{domain}: {REFERENCE} {t.mean_a:.4f} vs {other} {t.mean_b:.4f}, Holm p = {p:.3g}"
            rows.append((claim, evidence, claim_verdict(t, p, alpha)))
    test = metrics[(metrics.split == "test") & (metrics.metric == "NDCG@10")]
    wide = test.pivot_table(index=["domain", "seed"], columns="variant", values="value")
    if {REFERENCE, "base"} <= set(wide.columns):
        wins = int((wide[REFERENCE] > wide["base"]).sum())
        evidence = f"{REFERENCE} > base NDCG@10 in {wins} of {len(wide)} (domain, seed) pairs"
        claim1 = [r[2] for r in rows if r[0].startswith("Claim 1")]
        stable = wins == len(wide) and all(v == "supported" for v in claim1)
        verdict = "supported" if stable else "not supported"
        if stable and len(tests) == 1:
            verdict = "supported across seeds (one downstream domain: not tested across domains)"
        rows.append(
            (
                "Claim 4 (gains are stable across seeds and domains)",
                evidence,
                verdict,
            )
        )
    return rows


def _claims_table(rows: list[tuple[str, str, str]]) -> str:
    lines = ["| claim | evidence (test NDCG@10) | verdict |", "|---|---|---|"]
    lines += [f"| {c} | {e} | **{v}** |" for c, e, v in rows]
    return "\n".join(lines)


def render_experiment(
    cfg: Config,
    variants: list[str],
    facts: dict[str, dict[str, Any]],
    claim_rows: list[tuple[str, str, str]],
    results: dict[str, str],
    signif: dict[str, str],
    seeds: dict[str, str],
) -> str:
    """report.md of the experiment: claims first, then how it was run, then every number."""
    texts = {v: variant_text(v, cfg) for v in variants} | {
        ablation_variant(a): ab.text for a, ab in ABLATIONS.items()
    }
    base_dir = base_model_dir(cfg)
    out = [
        f"# cprec experiment: `{cfg.name}`",
        "",
        "Does continual pre-training (CPT) of an LLM on behaviour sequences from other domains help it "
        "recommend in a domain it never saw, and do the paper's two design choices (all-domain mixed "
        "sequences, the WSA schedule) matter? Verdicts use Holm-adjusted paired p-values "
        f"(α = {cfg.evaluate.alpha}); 'not supported' includes results that go the other way.",
        "",
        "## Claims",
        "",
        _claims_table(claim_rows),
        "",
        "## Setup",
        "",
        f"- Pre-training (CPT) domains: {', '.join(cfg.domains.pretrain)}; downstream, never in CPT: "
        f"{', '.join(cfg.domains.downstream)}.",
        f"- Base model: `{base_dir}` (fingerprint {checkpoint_fingerprint(base_dir)[:12]}); every arm starts "
        "CPT from it.",
        f"- Raw interactions: {verify(BRONZE_INTERACTIONS.path(cfg.root)).rows:,} rows, fingerprint "
        f"{verify(BRONZE_INTERACTIONS.path(cfg.root)).fingerprint[:12]}; code {code_version()}.",
        f"- Fine-tuning: frozen item encoder (`{cfg.finetune.item_pooling}` pooling), at most "
        f"{cfg.finetune.max_epochs} epochs, patience {cfg.finetune.patience}; seeds {cfg.evaluate.seeds}; "
        f"full ranking, leave-one-out; paired {TEST_NAMES[cfg.evaluate.test]} over users, Holm's correction "
        "over all comparisons of a domain in this report (the arms' own reports correct over fewer, so "
        "their adjusted p-values are smaller).",
        f"- CPT ran once per arm (cpt.seed {cfg.cpt.seed}): the seeds vary fine-tuning only, so the "
        "p-values are about these CPT checkpoints, not about CPT runs with other seeds.",
        "",
        _arms_table(facts),
        "",
        "## What was compared",
        "",
        *[f"- **{v}**: {texts[v]}" for v in variants],
        "",
        "## Results (test split, mean ± std over seeds)",
        "",
    ]
    for d in cfg.domains.downstream:
        out += [f"### {d}", "", results[d], "", f"![test metrics](plots/metrics_{d}.png)", ""]
        out += ["Test NDCG@10 per seed:", "", seeds[d], "", "Paired tests:", "", signif[d], ""]
    out += [
        "Each arm's own report (training curves, data counts): "
        + ", ".join(f"`{a}`" for a in facts)
        + f" under `{cfg.root}/reports/` and `{cfg.root}/ablations/<arm>/reports/`.",
    ]
    return "\n".join(out) + "\n"


def combine(cfg: Config, arms: dict[str, Config], seconds: dict[str, float]) -> dict[str, Any]:
    """Merge the arms' reports into <root>/reports/<name>-experiment/ and return its contents.

    `cfg` is the main arm's config; `arms` maps every arm name in ARMS to its config.
    Returns {"report_dir", "report_md", "claims": [(claim, evidence, verdict)]}.
    """
    metrics, per_user = _arm_tables(arms)
    variants = [REFERENCE, *map(ablation_variant, ABLATIONS)]
    variants += [v for v in cfg.finetune.variants if v != REFERENCE]
    facts = {arm: arm_facts(c, seconds[arm]) for arm, c in arms.items()}
    tests = {d: significance(per_user, d, variants, cfg.evaluate.test) for d in cfg.domains.downstream}
    claim_rows = claims(metrics, tests, cfg.evaluate.alpha)
    results = {d: summary_table(metrics, d, variants, cfg.evaluate.ks) for d in cfg.domains.downstream}
    signif = {d: significance_table(tests[d], cfg.evaluate.alpha) for d in cfg.domains.downstream}
    seeds = {d: seed_table(metrics, d, variants) for d in cfg.domains.downstream}
    report_md = render_experiment(cfg, variants, facts, claim_rows, results, signif, seeds)
    out_dir = experiment_dir(cfg)
    with atomic_dir(out_dir) as tmp:
        (tmp / "plots").mkdir()
        for d in cfg.domains.downstream:
            plot_metrics(metrics, d, variants, cfg.evaluate.ks, tmp / "plots" / f"metrics_{d}.png")
        write_table(REPORT_METRICS, tmp, pa.Table.from_pandas(metrics, preserve_index=False))
        write_table(REPORT_PER_USER, tmp, pa.Table.from_pandas(per_user, preserve_index=False))
        (tmp / "report.md").write_text(report_md)
        finish_manifest(tmp, "report.experiment", len(metrics), None, config_hash(*arms.values()))
    return {"report_dir": str(out_dir), "report_md": report_md, "claims": claim_rows}
