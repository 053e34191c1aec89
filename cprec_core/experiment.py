"""The experiment: the paper's claims (PAPER.md, "Claims to check") measured with controls and
replication, in one run of pipeline runs, then one report and `claims.json`.

Arms (each changes one setting against `main`, starts CPT from main's base model, keeps the token
budget, the fine-tuning and the seeds):
- `main`: the config as given.
- `shuffled`: the token-matched control (corpus.shuffle_lines): the same corpus lines, tokens,
  steps and schedule, the behaviour order destroyed. cpt vs cpt-shuffled separates behaviour
  knowledge from "more training on item text" (Claim 1's control).
- `domain-only`: no all-domain mixed sequences (corpus.mix_ratio=0): Claim 2.
- `cosine`: a cosine LR schedule instead of WSA (cpt.schedule.kind=cosine): Claim 3.
Replication: every arm runs CPT once per experiment.cpt_seeds; CPT seed k is fine-tuned with
fine-tuning seed k. The variants that do not depend on CPT (base[-mode], zero-shot-base,
popularity, sasrec) run once, with every seed of evaluate.seeds. An arm whose corpus differs has
its own run root (<root>/ablations/<arm>); `cosine` shares main's root (same corpus and blocks),
its runs told apart by name, as are the CPT seeds (the per-run stages are keyed by run name).

Reads each run's report (REPORT_METRICS, REPORT_PER_USER), corpus, packed and base-model manifests
and CPT summary.json. Writes <root>/reports/<name>-experiment/ atomically: `metrics/`,
`per_user/` (ablation variants renamed cpt-<arm>[-mode]), `claims.json` (cprec_core.claims),
`plots/metrics_<domain>.png` and `report.md`. Pure library code: the flow is flows/experiment.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa

from cprec_core.artifacts import (
    ArtifactError,
    atomic_dir,
    code_version,
    config_hash,
    finish_manifest,
    read_table,
    verify,
    write_table,
)
from cprec_core.claims import Comparison, compare, summarize, write_claims
from cprec_core.config import Config
from cprec_core.cpt import read_summary
from cprec_core.errors import UserError
from cprec_core.evaluate import (
    CLAIM_TEXT,
    PROTOCOLS,
    TEST_NAMES,
    claims_table,
    plot_metrics,
    summary_table,
    training_table,
    variant_text,
)
from cprec_core.paths import base_model_dir, cpt_dir, experiment_dir, report_dir
from cprec_core.rec.finetune import checkpoint_of, load_runs
from cprec_core.schema import (
    BRONZE_INTERACTIONS,
    GOLD_CORPUS,
    GOLD_PACKED,
    REPORT_METRICS,
    REPORT_PER_USER,
    SILVER_EVENTS,
)
from cprec_core.stages import STAGES


@dataclass(frozen=True)
class Ablation:
    """One setting changed against the main arm, what that tests, and whether its corpus differs."""

    override: str
    text: str
    claim: str
    own_corpus: bool


ABLATIONS: dict[str, Ablation] = {
    "shuffled": Ablation(
        "corpus.shuffle_lines=true",
        "CPT on the same corpus lines, tokens, steps and schedule, with the behaviour order destroyed "
        "(lines shuffled across users and documents), then fine-tuned exactly like cpt: the token-matched "
        "control.",
        "1-control",
        own_corpus=True,
    ),
    "domain-only": Ablation(
        "corpus.mix_ratio=0",
        "CPT on domain-only sequences (no all-domain mixed sequences), same token budget, then fine-tuned "
        "exactly like cpt.",
        "2",
        own_corpus=True,
    ),
    "cosine": Ablation(
        "cpt.schedule.kind=cosine",
        "CPT with a plain cosine learning-rate schedule (same peak LR and warmup) instead of "
        "Warmup-Stable-Annealing, then fine-tuned exactly like cpt.",
        "3",
        own_corpus=False,
    ),
}
ARMS = ("main", *ABLATIONS)
ARM_CLAIM_TEXT = {
    "1-control": "CPT's gain is behaviour, not more text: cpt beats the token-matched shuffled control",
    "2": "Mixed sequences add to domain-only sequences",
    "3": "WSA beats a plain cosine schedule for CPT",
}
PIPELINE = tuple(s for s in STAGES if s != "recommend")  # an experiment measures; it serves nothing


class ExperimentError(UserError, ValueError):
    """The config cannot serve as an experiment's main arm; the message says which key."""


@dataclass(frozen=True)
class PlannedRun:
    """One pipeline run of the experiment: which arm, with which overrides and stages."""

    arm: str
    cpt_seed: int | None  # None: the run of the variants that do not depend on CPT
    overrides: tuple[str, ...] = ()
    stages: tuple[str, ...] = PIPELINE


def arm_variant(variant: str, arm: str) -> str:
    """The name an ablation arm's variant has in the combined report: cpt[-mode] -> cpt-<arm>[-mode]."""
    return variant if arm == "main" else f"cpt-{arm}{variant[3:]}"


def _cpt_variants(variants: list[str]) -> list[str]:
    return [v for v in variants if checkpoint_of(v) == "cpt"]


def check_main(cfg: Config) -> None:
    """Refuse a main arm that cannot test the claims, naming the key."""
    ft = cfg.finetune
    cpt = [v for v in ft.variants if v.startswith("cpt")]
    if not cpt or not any("base" + v[3:] in ft.variants for v in cpt):
        raise ExperimentError(
            "finetune.variants must include a cpt variant and its base twin (e.g. cpt, base)"
        )
    if cfg.corpus.mix_ratio == 0:
        raise ExperimentError("corpus.mix_ratio is 0: the main arm must use mixed sequences (Claim 2)")
    if cfg.corpus.shuffle_lines:
        raise ExperimentError("corpus.shuffle_lines is true: the main arm must keep the behaviour order")
    if cfg.cpt.schedule.kind != "wsa":
        raise ExperimentError(
            f"cpt.schedule.kind is {cfg.cpt.schedule.kind!r}: the main arm must use 'wsa' (Claim 3)"
        )
    for key in ("arm_variants", "costly_variants"):
        unknown = [v for v in getattr(cfg.experiment, key) if v not in _cpt_variants(ft.variants)]
        if unknown:
            raise ExperimentError(
                f"experiment.{key} {unknown}: each must be a cpt variant of finetune.variants"
            )


def plan(cfg: Config, arms: list[str]) -> list[PlannedRun]:
    """Every pipeline run of the experiment, in the order to run them (main's data stages first)."""
    check_main(cfg)
    ex, ft = cfg.experiment, cfg.finetune
    unknown = set(arms) - set(ARMS)
    if unknown:
        raise ExperimentError(f"arms {sorted(unknown)} unknown; arms: {', '.join(ARMS)}")
    fixed = [v for v in ft.variants if checkpoint_of(v) != "cpt"]
    twins = {"base" + v[3:] for v in ex.costly_variants} & set(fixed)
    few = ", ".join(f"{v}: [{', '.join(map(str, ex.costly_seeds))}]" for v in sorted(twins))
    runs = [
        PlannedRun(
            "main",
            None,
            (
                f"name={cfg.name}-base",
                f"finetune.variants=[{','.join(fixed)}]",
                f"finetune.variant_seeds={{{few}}}",
            ),
            tuple(s for s in PIPELINE if s != "cpt"),
        )
    ]
    for arm in ["main", *[a for a in ABLATIONS if a in arms]]:
        for seed in ex.cpt_seeds:
            variants = _cpt_variants(ft.variants) if arm == "main" else ex.arm_variants
            if seed not in ex.costly_seeds:
                variants = [v for v in variants if v not in ex.costly_variants]
            overrides = [
                f"name={run_name(cfg, arm, seed)}",
                f"cpt.seed={seed}",
                f"evaluate.seeds=[{seed}]",
                f"finetune.variants=[{','.join(variants)}]",
            ]
            stages: tuple[str, ...] = ("cpt", "finetune", "evaluate")
            if arm != "main":
                overrides += [f"model.path={base_model_dir(cfg).resolve()}", ABLATIONS[arm].override]
                if ABLATIONS[arm].own_corpus:
                    overrides.append(f"paths.root={(cfg.root / 'ablations' / arm).resolve()}")
                    stages = PIPELINE
            runs.append(PlannedRun(arm, seed, tuple(overrides), stages))
    return runs


def run_name(cfg: Config, arm: str, seed: int) -> str:
    return f"{cfg.name}-s{seed}" if arm == "main" else f"{cfg.name}-{arm}-s{seed}"


Ran = list[tuple[PlannedRun, Config, float]]  # each planned run, its resolved config, its wall seconds


def combined_tables(runs: Ran) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every run's metrics and per-user rows, ablation variants renamed.

    Raises ExperimentError when a run's silver events differ from the main arm's: the paired
    tests compare the same users on the same held-out items, or nothing.
    """
    events = [(r, verify(SILVER_EVENTS.path(c.root)).fingerprint) for r, c, _ in runs]
    reference = next(f for r, f in events if r.arm == "main")
    differ = sorted({r.arm for r, f in events if f != reference})
    if differ:
        raise ExperimentError(f"arms {', '.join(differ)}: silver.events differ from the main arm's")
    metrics, per_user = [], []
    for run, cfg, _ in runs:
        m = read_table(REPORT_METRICS, report_dir(cfg)).to_pandas()
        u = read_table(REPORT_PER_USER, report_dir(cfg)).to_pandas()
        if run.arm != "main":
            m, u = m[m.variant.str.startswith("cpt")].copy(), u[u.variant.str.startswith("cpt")].copy()
            m["variant"] = m.variant.map(lambda v, a=run.arm: arm_variant(v, a))
            u["variant"] = u.variant.map(lambda v, a=run.arm: arm_variant(v, a))
        metrics.append(m)
        per_user.append(u)
    return pd.concat(metrics, ignore_index=True), pd.concat(per_user, ignore_index=True)


def claim_plan(cfg: Config, arms: list[str]) -> list[tuple[str, str, str, str, str]]:
    """(claim, text, domain, a, b): Claim 1 and its control, Claims 2 and 3, and zero-shot."""
    ft, ex = cfg.finetune, cfg.experiment
    rows = []
    for d in cfg.eval_domains:
        for v in _cpt_variants(ft.variants):
            if v.startswith("cpt") and "base" + v[3:] in ft.variants:
                rows.append(("1", CLAIM_TEXT["1"], d, v, "base" + v[3:]))
            for arm in (a for a in ABLATIONS if a in arms):
                if v in ex.arm_variants:
                    claim = ABLATIONS[arm].claim
                    rows.append((claim, ARM_CLAIM_TEXT[claim], d, v, arm_variant(v, arm)))
        if {"zero-shot", "zero-shot-base"} <= set(ft.variants):
            rows.append(("zero-shot", CLAIM_TEXT["zero-shot"], d, "zero-shot", "zero-shot-base"))
    return rows


def run_facts(run: PlannedRun, cfg: Config, seconds: float) -> dict[str, Any]:
    """What one CPT run pre-trained on and how it went: corpus, tokens, schedule, loss, perplexities."""
    corpus = verify(GOLD_CORPUS.path(cfg.root)).extra
    packed = verify(GOLD_PACKED.path(cfg.root)).extra
    base = verify(base_model_dir(cfg)).extra
    facts: dict[str, Any] = {
        "arm": run.arm,
        "cpt_seed": run.cpt_seed,
        "documents": corpus["documents_total"],
        "mix_ratio": corpus["mix_ratio_achieved"],
        "shuffled": corpus.get("shuffled_lines", False),
        "corpus_tokens": packed["tokens"],
        "base_tokens": base.get("pretrain_tokens", 0),
        "seconds": seconds,
    }
    if run.cpt_seed is not None:
        cpt = read_summary(cpt_dir(cfg))
        facts |= {
            "cpt_steps": cpt["steps"],
            "cpt_tokens": cpt["tokens"],
            "schedule": cfg.cpt.schedule.kind,
            "final_loss": cpt["final_loss"],
            "ppl_all": (cpt["probe_perplexity_before"], cpt["probe_perplexity_after"]),
            "ppl_item": (cpt.get("probe_target_perplexity_before"), cpt.get("probe_target_perplexity_after")),
        }
    return facts


def _ppl(pair: tuple[float | None, float | None]) -> str:
    before, after = pair
    return "-" if before is None or after is None else f"{before:.1f} → {after:.1f}"


def runs_table(facts: list[dict[str, Any]]) -> str:
    lines = [
        "| arm | CPT seed | corpus docs | mixed share | lines shuffled | corpus tokens | base tokens "
        "| CPT steps | CPT tokens | schedule | final loss | held-out item perplexity | all-token perplexity "
        "| wall time |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for f in facts:
        if f["cpt_seed"] is None:
            continue
        lines.append(
            f"| {f['arm']} | {f['cpt_seed']} | {f['documents']:,} | {f['mix_ratio']:.3f} | "
            f"{'yes' if f['shuffled'] else 'no'} | {f['corpus_tokens']:,} | {f['base_tokens']:,} | "
            f"{f['cpt_steps']:,} | {f['cpt_tokens']:,} | {f['schedule']} | {f['final_loss']:.3f} | "
            f"{_ppl(f['ppl_item'])} | {_ppl(f['ppl_all'])} | {f['seconds'] / 60:.1f} min |"
        )
    return "\n".join(lines)


def seed_table(metrics: pd.DataFrame, domain: str, variants: list[str]) -> str:
    """Test NDCG@10 (masked) of every variant at every seed (Claim 4: is the ordering stable?)."""
    part = metrics[
        (metrics.domain == domain)
        & (metrics.split == "test")
        & (metrics.metric == "NDCG@10")
        & (metrics.protocol == "masked")
    ]
    wide = part.pivot_table(index="variant", columns="seed", values="value")
    seeds = list(wide.columns)
    lines = ["| variant | " + " | ".join(f"seed {s}" for s in seeds) + " |", "|---|" + "---:|" * len(seeds)]
    for v in variants:
        if v in wide.index:
            cells = ["-" if pd.isna(wide.loc[v, s]) else f"{wide.loc[v, s]:.4f}" for s in seeds]
            lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_rows(summary: list[dict[str, Any]]) -> str:
    lines = [
        "| claim | a vs b | evidence (effect [95 % interval] per domain) | verdict |",
        "|---|---|---|---|",
    ]
    for s in summary:
        lines.append(
            f"| {s['claim']}. {s['text']} | {s['a']} vs {s['b']} | {s['evidence']} | **{s['verdict']}** |"
        )
    return "\n".join(lines)


def render_experiment(
    cfg: Config,
    variants: list[str],
    facts: list[dict[str, Any]],
    comparisons: list[Comparison],
    summary: list[dict[str, Any]],
    metrics: pd.DataFrame,
    trained: list[dict[str, Any]],
) -> str:
    """report.md of the experiment: claims first, then how it was run, then every number."""
    base_dir = base_model_dir(cfg)
    texts = {
        v: variant_text(v, cfg)
        for v in variants
        if not v.startswith(("cpt-shuffled", "cpt-domain", "cpt-cosine"))
    }
    texts |= {arm_variant("cpt", a): ab.text for a, ab in ABLATIONS.items()}
    budget = next(f for f in facts if f["cpt_seed"] is None)
    out = [
        f"# cprec experiment: `{cfg.name}`",
        "",
        "Does continual pre-training (CPT) of an LLM on behaviour sequences from other domains help it "
        "recommend in domains it never saw, is the gain behaviour knowledge rather than more text, and do "
        "the "
        "paper's two design choices (all-domain mixed sequences, the WSA schedule) matter?",
        "",
        "## Claims",
        "",
        summary_rows(summary),
        "",
        "Every comparison (per-user test NDCG@10, history masked; effect with a 95 % cluster-bootstrap "
        "interval over users and each variant's seeds, CPT seeds for CPT variants; Holm over every row; "
        "verdict `supported` = interval above 0 and Holm p < "
        f"{cfg.evaluate.alpha}, `contradicted` = below 0, else `inconclusive`; machine-readable: "
        "`claims.json`):",
        "",
        claims_table(comparisons),
        "",
        "## Setup",
        "",
        f"- Pre-training (CPT) domains: {', '.join(cfg.domains.pretrain)}; downstream, never in CPT: "
        f"{', '.join(cfg.domains.downstream)}.",
        f"- Base model: `{base_dir}`, general pre-training on item lines: {budget['base_tokens']:,} tokens "
        "(its curve: `pretrain_curve.png` beside the weights); every arm starts CPT from it.",
        f"- Raw interactions: {verify(BRONZE_INTERACTIONS.path(cfg.root)).rows:,} rows, fingerprint "
        f"{verify(BRONZE_INTERACTIONS.path(cfg.root)).fingerprint[:12]}; code {code_version()}.",
        f"- CPT seeds {cfg.experiment.cpt_seeds} per arm (CPT seed k fine-tuned with seed k); the variants "
        f"without CPT with fine-tuning seeds {cfg.evaluate.seeds}"
        + (
            f"; {', '.join(cfg.experiment.costly_variants)} and their base twins only at seeds "
            f"{cfg.experiment.costly_seeds} (a CPU budget: their intervals rest on those seeds)."
            if cfg.experiment.costly_variants
            else "."
        ),
        f"- Fine-tuning: every model to patience ({cfg.finetune.patience} epochs without a better valid "
        "NDCG@10, "
        f"at most {cfg.finetune.max_epochs}); design choices picked on valid only "
        f"(finetune.select: {cfg.finetune.select or 'none'}); full ranking, leave-one-out; paired "
        f"{TEST_NAMES[cfg.evaluate.test]} over users.",
        "",
        runs_table(facts),
        "",
        "## What was compared",
        "",
        *[f"- **{v}**: {t}" for v, t in texts.items()],
        "",
        "## Results (test split, mean ± std over seeds)",
        "",
    ]
    for d in cfg.eval_domains:
        out += [f"### {d}", ""]
        for protocol in PROTOCOLS:
            out += [
                f"History {protocol}:",
                "",
                summary_table(metrics, d, variants, cfg.evaluate.ks, protocol),
                "",
            ]
        out += [
            f"![test metrics](plots/metrics_{d}.png)",
            "",
            "Test NDCG@10 per seed:",
            "",
            seed_table(metrics, d, variants),
            "",
        ]
    out += ["## Training", "", training_table(trained), ""]
    return "\n".join(out) + "\n"


def combine(cfg: Config, runs: Ran) -> dict[str, Any]:
    """Merge the runs' reports into <root>/reports/<name>-experiment/ and return its contents.

    `cfg` is the main arm's config. Returns {"report_dir", "report_md", "claims", "summary"}.
    """
    arms = sorted({r.arm for r, _, _ in runs})
    metrics, per_user = combined_tables(runs)
    present = list(dict.fromkeys(per_user.variant))
    variants = [v for v in cfg.finetune.variants if v in present] + [
        v for v in present if v not in cfg.finetune.variants
    ]
    comparisons = compare(per_user, claim_plan(cfg, arms), cfg.evaluate.test, cfg.evaluate.alpha)
    summary = summarize(comparisons, per_user, cfg.eval_domains)
    facts = [run_facts(r, c, seconds) for r, c, seconds in runs]
    trained = []
    for run, c, _ in runs:
        try:
            trained += [
                {**r, "variant": arm_variant(r["variant"], run.arm) if run.arm != "main" else r["variant"]}
                for r in load_runs(c)["runs"]
            ]
        except ArtifactError:
            continue
    report_md = render_experiment(cfg, variants, facts, comparisons, summary, metrics, trained)
    out_dir = experiment_dir(cfg)
    with atomic_dir(out_dir) as tmp:
        (tmp / "plots").mkdir()
        for d in cfg.eval_domains:
            plot_metrics(metrics, d, variants, cfg.evaluate.ks, tmp / "plots" / f"metrics_{d}.png")
        write_table(REPORT_METRICS, tmp, pa.Table.from_pandas(metrics, preserve_index=False))
        write_table(REPORT_PER_USER, tmp, pa.Table.from_pandas(per_user, preserve_index=False))
        write_claims(tmp, comparisons, summary, cfg.evaluate.alpha)
        (tmp / "report.md").write_text(report_md)
        finish_manifest(tmp, "report.experiment", len(metrics), None, config_hash(*(c for _, c, _ in runs)))
    return {
        "report_dir": str(out_dir),
        "report_md": report_md,
        "claims": [c.__dict__ for c in comparisons],
        "summary": summary,
    }
