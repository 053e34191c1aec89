"""The evaluate stage: test metrics over seeds, both ranking protocols, the claims with intervals,
plots and report.md (PAPER.md §6; DESIGN.md step 7).

Reads the finetune stage's runs (models/rec/<run>/runs.json and each run's REC_RANKS and
results.json; this stage never trains: cprec_core.rec.finetune.load_runs). Writes reports/<run>/
atomically, with a manifest: `metrics/` (REPORT_METRICS: one row per domain, variant, seed, split,
protocol, metric), `per_user/` (REPORT_PER_USER: test rank and NDCG@10 of every user, both
protocols), `claims.json` (cprec_core.claims), `plots/metrics_<domain>.png`,
`plots/curves_<domain>.png` and `report.md`.

Two protocols: `masked` (ours, the one every claim uses) ranks the target among the items the user
has not interacted with; `unmasked` (RecBole's default) ranks it among all items, so a model is
also charged for ranking seen items high. Test metrics are reported; valid metrics served early
stopping and design choices only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pyarrow as pa

from cprec_core.artifacts import atomic_dir, config_hash, finish_manifest, read_table, write_table
from cprec_core.claims import Comparison, compare, summarize, write_claims
from cprec_core.config import Config
from cprec_core.locks import holds_run_lock
from cprec_core.metrics import PairedTest, metric_names, paired_test, per_user_metrics
from cprec_core.paths import report_dir
from cprec_core.rec.finetune import choice_label, load_runs
from cprec_core.schema import REC_RANKS, REPORT_METRICS, REPORT_PER_USER

TEST_NAMES = {"wilcoxon": "Wilcoxon signed-rank test", "ttest": "paired t-test"}
PROTOCOLS = {"masked": "rank", "unmasked": "rank_unmasked"}  # protocol -> REC_RANKS column
CLAIM_TEXT = {
    "1": "CPT then fine-tune beats fine-tune only",
    "zero-shot": "CPT alone (no target training) beats the base LLM alone",
}

MODE_TEXT = {
    "frozen": "the LLM encodes each item's text once and stays frozen; a trainable adapter",
    "full": "the LLM reads each item's text and every LLM weight trains with the recommender; an adapter",
    "lora": "the LLM reads each item's text and LoRA adapters on its attention train with the recommender; "
    "an adapter",
    "top": "the LLM reads each item's text; its top blocks train with the recommender over cached lower "
    "states; an adapter",
}
FIXED_TEXT = {
    "zero-shot": "the continually pre-trained LLM with no training on this domain: the user is the average "
    "of the LLM embeddings of their recent items; items are ranked by cosine similarity to it.",
    "zero-shot-base": "the same zero-shot ranking with the base LLM before continual pre-training: what text "
    "similarity alone gives, without behaviour knowledge.",
    "popularity": "every user gets the items ranked by how often they occur in the training events.",
    "sasrec": "SASRec, the standard ID-based sequential recommender (no text): a causal transformer over "
    "learned item-id embeddings, trained with a softmax over all items.",
}


def variant_text(variant: str, cfg: Config) -> str:
    """One sentence on what a variant is, for a reader who never saw the code."""
    if variant in FIXED_TEXT:
        return FIXED_TEXT[variant]
    mode = cfg.finetune.variant_mode(variant)
    if mode is None:
        return "(see cprec_core/rec/finetune.py)"
    which = "continually pre-trained (CPT)" if variant.startswith("cpt") else "original (base, before CPT)"
    user = (
        "the LLM's own blocks over the user's items"
        if cfg.finetune.user_model == "llm"
        else "a small causal transformer over the user's items"
    )
    ids = " plus a learned id vector per item," if cfg.finetune.item_id_embedding else ""
    return f"the {which} LLM; {MODE_TEXT[mode]}{ids} and {user} predict the next item (InfoNCE loss)."


def claim_plan(variants: list[str], domains: list[str]) -> list[tuple[str, str, str, str, str]]:
    """(claim, text, domain, a, b) one run can test: each cpt[-mode] against base[-mode], and
    zero-shot against zero-shot-base."""
    pairs = [(v, "base" + v[3:]) for v in variants if v.startswith("cpt") and "base" + v[3:] in variants]
    pairs = [("1", a, b) for a, b in pairs]
    if {"zero-shot", "zero-shot-base"} <= set(variants):
        pairs.append(("zero-shot", "zero-shot", "zero-shot-base"))
    return [(c, CLAIM_TEXT[c], d, a, b) for d in domains for c, a, b in pairs]


def collect(runs: list[dict[str, Any]], ks: list[int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-run mean metrics (long format, both protocols) and per-user test ranks and NDCG@10."""
    metric_rows, user_frames = [], []
    for run in runs:
        ranks = read_table(REC_RANKS, Path(run["out_dir"])).to_pandas()
        for split, part in ranks.groupby("split", sort=True):
            for protocol, column in PROTOCOLS.items():
                per_user = per_user_metrics(part[column].to_numpy(), ks)
                for name in metric_names(ks):
                    value = float(per_user[name].mean())
                    metric_rows.append(
                        (run["domain"], run["variant"], int(run["seed"]), split, protocol, name, value)
                    )
            if split == "test":
                user_frames.append(
                    pd.DataFrame(
                        {
                            "domain": run["domain"],
                            "variant": run["variant"],
                            "seed": int(run["seed"]),
                            "user_id": part["user_id"].to_numpy(),
                            "rank": part["rank"].to_numpy(),
                            "ndcg_at_10": per_user_metrics(part["rank"].to_numpy(), [10])["NDCG@10"],
                            "rank_unmasked": part["rank_unmasked"].to_numpy(),
                            "ndcg_at_10_unmasked": per_user_metrics(part["rank_unmasked"].to_numpy(), [10])[
                                "NDCG@10"
                            ],
                        }
                    )
                )
    metrics = pd.DataFrame(metric_rows, columns=REPORT_METRICS.schema.names)
    per_user = (
        pd.concat(user_frames, ignore_index=True)
        if user_frames
        else pd.DataFrame(columns=REPORT_PER_USER.schema.names)
    )
    return metrics, per_user


def summary_table(
    metrics: pd.DataFrame, domain: str, variants: list[str], ks: list[int], protocol: str = "masked"
) -> str:
    """Markdown table of test metrics, mean ± std over seeds, one row per variant."""
    names = metric_names(ks)
    test = metrics[(metrics.domain == domain) & (metrics.split == "test") & (metrics.protocol == protocol)]
    stats = test.groupby(["variant", "metric"])["value"].agg(["mean", "std", "count"])
    lines = ["| variant | seeds | " + " | ".join(names) + " |", "|---|---:|" + "---:|" * len(names)]
    for v in variants:
        if (v, names[0]) not in stats.index:
            continue
        cells = []
        for n in names:
            mean, std = stats.loc[(v, n), "mean"], stats.loc[(v, n), "std"]
            cells.append(f"{mean:.4f} ± {0.0 if np.isnan(std) else std:.4f}")
        lines.append(f"| {v} | {int(stats.loc[(v, names[0]), 'count'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def significance(
    per_user: pd.DataFrame, domain: str, reference: str, others: list[str], test: str
) -> dict[str, PairedTest]:
    """`reference` vs each other variant: per-user test NDCG@10 averaged over seeds, paired over users."""
    part = per_user[per_user.domain == domain]
    by_user = part.groupby(["variant", "user_id"])["ndcg_at_10"].mean().unstack("variant")
    if reference not in by_user:
        return {}
    return {
        v: paired_test(by_user[reference].to_numpy(), by_user[v].to_numpy(), test)
        for v in others
        if v != reference and v in by_user
    }


def claims_table(comparisons: list[Comparison]) -> str:
    """Markdown: one row per comparison, with the bootstrap interval and Holm's p."""
    lines = [
        "| claim | domain | a vs b | NDCG@10 a | NDCG@10 b | effect [95 % interval] | p | Holm p "
        "| seeds a / b | verdict |",
        "|---|---|---|---:|---:|---|---:|---:|---:|---|",
    ]
    for c in comparisons:
        lines.append(
            f"| {c.claim}. {c.text} | {c.domain} | {c.a} vs {c.b} | {c.mean_a:.4f} | {c.mean_b:.4f} | "
            f"{c.effect:+.4f} [{c.ci_low:+.4f}, {c.ci_high:+.4f}] | {c.p_value:.2g} | {c.p_holm:.2g} | "
            f"{c.n_seeds_a} / {c.n_seeds_b} | **{c.verdict}** |"
        )
    return "\n".join(lines)


def baselines_table(tests: dict[str, PairedTest], reference: str) -> str:
    """Markdown: the reference variant against the baselines (raw paired p-values, no claim)."""
    lines = [
        f"| comparison | users | {reference} NDCG@10 | other NDCG@10 | test | p-value |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for other, t in tests.items():
        lines.append(
            f"| {reference} vs {other} | {t.n_users} | {t.mean_a:.4f} | {t.mean_b:.4f} | {t.test} "
            f"| {t.p_value:.3g} |"
        )
    return "\n".join(lines)


def plot_metrics(metrics: pd.DataFrame, domain: str, variants: list[str], ks: list[int], path: Path) -> None:
    """Grouped bars: test metrics per variant (masked protocol), error bars = std over seeds."""
    names = metric_names(ks)
    test = metrics[(metrics.domain == domain) & (metrics.split == "test") & (metrics.protocol == "masked")]
    stats = test.groupby(["variant", "metric"])["value"].agg(["mean", "std"]).fillna(0.0)
    present = [v for v in variants if (v, names[0]) in stats.index]
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 3, 4))
    width = 0.8 / max(1, len(present))
    x = np.arange(len(names))
    for i, v in enumerate(present):
        means = [stats.loc[(v, n), "mean"] for n in names]
        stds = [stats.loc[(v, n), "std"] for n in names]
        ax.bar(x + i * width, means, width, yerr=stds, capsize=2, label=v)
    ax.set_xticks(x + width * (len(present) - 1) / 2, names, rotation=30)
    ax.set_ylabel("test value (mean ± std over seeds)")
    ax.set_title(f"{domain}: full-ranking test metrics")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_curves(runs: list[dict[str, Any]], domain: str, variants: list[str], path: Path) -> bool:
    """Valid NDCG@10 per epoch of every trained run of a domain; False when none was trained."""
    trained = [r for r in runs if r["domain"] == domain and r["curve"]]
    if not trained:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    colors = {v: f"C{i}" for i, v in enumerate(variants)}  # the same colour as in the metric bars
    for r in trained:
        epochs = [c["epoch"] for c in r["curve"]]
        ax.plot(
            epochs,
            [c["valid_NDCG@10"] for c in r["curve"]],
            color=colors.get(r["variant"], "gray"),
            alpha=0.8,
            label=f"{r['variant']} seed {r['seed']}",
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("valid NDCG@10 (early-stopping signal)")
    ax.set_title(f"{domain}: training curves")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _data_table(runs: list[dict[str, Any]], domains: list[str]) -> str:
    lines = [
        "| domain | users | items | train events | valid targets | test targets |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for d in domains:
        r = next(r for r in runs if r["domain"] == d)
        lines.append(
            f"| {d} | {r['n_users']} | {r['n_items']} | {r['n_train_events']} | {r['n_users']} "
            f"| {r['n_users']} |"
        )
    return "\n".join(lines)


def cut_short(run: dict[str, Any]) -> bool:
    """A trained run whose best epoch was its last allowed one: cut short by the cap, not trained out."""
    return bool(run.get("cut_short"))


def training_table(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| domain | variant | seed | choice | epochs run | best epoch | cut short by the cap "
        "| trainable params "
        "| s / epoch | seconds |",
        "|---|---|---:|---|---:|---:|---|---:|---:|---:|",
    ]
    for r in runs:
        per_epoch = r.get("seconds_per_epoch")
        lines.append(
            f"| {r['domain']} | {r['variant']} | {r['seed']} "
            f"| {choice_label(r.get('choice') or {}) or '-'} | "
            f"{r['epochs_run']} | {r['best_epoch'] or '-'} | {'**yes**' if cut_short(r) else 'no'} | "
            f"{r['trainable_params']} | {per_epoch if per_epoch is not None else '-'} | {r['seconds']:.1f} |"
        )
    return "\n".join(lines)


def render_report(
    cfg: Config,
    runs: list[dict[str, Any]],
    tables: dict[str, dict[str, str]],
    comparisons: list[Comparison],
    baselines_md: dict[str, str],
    curves: dict[str, bool],
) -> str:
    """report.md: for a reader who never saw the code."""
    ev, ft = cfg.evaluate, cfg.finetune
    domains = cfg.eval_domains
    variants = [v for v in ft.variants if any(r["variant"] == v for r in runs)]
    short = [r for r in runs if cut_short(r)]
    out = [
        f"# cprec evaluation report: `{cfg.name}`",
        "",
        "Does continual pre-training (CPT) of an LLM on behaviour data from other domains help it "
        "recommend in a domain it never saw? Each downstream domain below was held out of CPT.",
        "",
        "## What was compared",
        "",
        *[f"- **{v}**: {variant_text(v, cfg)}" for v in variants],
        "",
        "## Claims",
        "",
        f"Per-user test NDCG@10 (history masked). Effect = mean of a minus mean of b; the 95 % interval is a "
        f"cluster bootstrap over users and each variant's seeds; p is a two-sided {TEST_NAMES[ev.test]} over "
        f"users on the seed means, Holm-corrected over the rows. Verdict `supported` needs the interval "
        "above "
        f"0 and Holm p < {ev.alpha}; `contradicted` the interval below 0; otherwise `inconclusive`. "
        "Machine-readable: `claims.json`.",
        "",
        claims_table(comparisons) if comparisons else "_(no cpt/base pair in this run)_",
        "",
        "## Data",
        "",
        "Leave-one-out per user: each user's last interaction is the test target, the one before it the "
        "validation target (early stopping and design choices only), the rest is training history.",
        "",
        _data_table(runs, domains),
        "",
        "## How it was measured",
        "",
        "- Every item of the domain is ranked for every user (no sampled negatives). Protocol `masked` "
        "(ours): "
        "items the user already interacted with are removed from the ranking, the target never is. Protocol "
        "`unmasked` (RecBole's default): nothing is removed.",
        "- Ties count against the target (pessimistic): a model that scores everything equally gets no "
        "credit.",
        "- A user's events at the same timestamp are ordered by "
        f"`behaviors.tie_break = {cfg.behaviors.tie_break}`"
        + (
            " (the raw files' order, as RecBole's stable sort keeps it)."
            if cfg.behaviors.tie_break == "source_order"
            else "."
        ),
        f"- Recall@K (= hit rate), NDCG@K (1/log2(rank+2) in the top K), MRR (1/(rank+1)); K in {ev.ks}.",
        f"- {len(ev.seeds)} seed(s) {ev.seeds}; tables show mean ± sample standard deviation over seeds.",
        f"- Trained variants train to patience: stopped after {ft.patience} epochs without a better "
        "validation "
        f"NDCG@10, at most {ft.max_epochs} epochs"
        + (f" ({ft.llm_max_epochs} while the item LLM trains). " if ft.llm_max_epochs else ". ")
        + (
            f"**{len(short)} run(s) peaked at the cap (cut short, not trained out):** "
            + ", ".join(f"{r['variant']} seed {r['seed']} ({r['domain']})" for r in short)
            + "."
            if short
            else "No run peaked at the cap."
        ),
        "",
        "## Results (test split)",
        "",
    ]
    for d in domains:
        out += [
            f"### {d}",
            "",
            "History masked (ours):",
            "",
            tables[d]["masked"],
            "",
            "History unmasked (RecBole's protocol):",
            "",
            tables[d]["unmasked"],
            "",
            f"![test metrics](plots/metrics_{d}.png)",
            "",
            baselines_md[d],
            "",
        ]
    out += ["## Training", "", training_table(runs), ""]
    out += [f"![training curves, {d}](plots/curves_{d}.png)" for d in domains if curves[d]]
    return "\n".join(out) + "\n"


@holds_run_lock
def evaluate_run(cfg: Config) -> dict[str, Any]:
    """Read the finetune stage's runs (it must have run), write reports/<run>/, return its tables.

    Returns {"report_dir", "tables": {domain: masked results markdown}, "claims": [comparison dicts],
    "claims_md": str, "summary": [claim verdicts], "report_md": str, "runs": n}.
    """
    ev = cfg.evaluate
    runs = load_runs(cfg)["runs"]
    metrics, per_user = collect(runs, ev.ks)
    domains = cfg.eval_domains
    variants = list(cfg.finetune.variants)
    comparisons = compare(per_user, claim_plan(variants, domains), ev.test, ev.alpha)
    summary = summarize(comparisons, per_user, domains)
    tables = {d: {p: summary_table(metrics, d, variants, ev.ks, p) for p in PROTOCOLS} for d in domains}
    reference = next((v for v in variants if v.startswith("cpt")), None)
    baselines_md = {
        d: baselines_table(significance(per_user, d, reference, ["popularity", "sasrec"], ev.test), reference)
        if reference
        else ""
        for d in domains
    }
    out_dir = report_dir(cfg)
    curves: dict[str, bool] = {}
    with atomic_dir(out_dir) as tmp:
        (tmp / "plots").mkdir()
        for d in domains:
            plot_metrics(metrics, d, variants, ev.ks, tmp / "plots" / f"metrics_{d}.png")
            curves[d] = plot_curves(runs, d, variants, tmp / "plots" / f"curves_{d}.png")
        write_table(REPORT_METRICS, tmp, pa.Table.from_pandas(metrics, preserve_index=False))
        write_table(REPORT_PER_USER, tmp, pa.Table.from_pandas(per_user, preserve_index=False))
        write_claims(tmp, comparisons, summary, ev.alpha)
        report_md = render_report(cfg, runs, tables, comparisons, baselines_md, curves)
        (tmp / "report.md").write_text(report_md)
        finish_manifest(
            tmp, "report", len(metrics), None, config_hash(cfg.evaluate, cfg.finetune, cfg.domains)
        )
    return {
        "report_dir": str(out_dir),
        "tables": {d: t["masked"] for d, t in tables.items()},
        "claims": [c.__dict__ for c in comparisons],
        "claims_md": claims_table(comparisons) if comparisons else "_(no cpt/base pair in this run)_",
        "summary": summary,
        "report_md": report_md,
        "runs": len(runs),
    }
