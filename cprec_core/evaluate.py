"""The evaluate stage: test metrics over seeds, paired significance, plots and report.md
(PAPER.md §6; DESIGN.md step 7).

Reads the finetune stage's runs (models/rec/<run>/<domain>/<variant>/seed=<s>/: REC_RANKS and
results.json, listed in its runs.json; this stage never trains: cprec_core.rec.finetune.load_runs).
Writes reports/<run>/ atomically, with a manifest: `metrics/` (REPORT_METRICS: one row per
domain, variant, seed, split, metric), `per_user/` (REPORT_PER_USER: test rank and NDCG@10 of
every user), `plots/metrics_<domain>.png`, `plots/curves_<domain>.png` and `report.md`.

Test metrics are reported; valid metrics served only early stopping. Significance: per user,
test NDCG@10 averaged over seeds; `cpt` against every other variant with a two-sided paired
test (evaluate.test); Holm's correction over the comparisons of a domain is shown beside the
raw p-value.
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
from cprec_core.config import Config
from cprec_core.locks import holds_run_lock
from cprec_core.metrics import PairedTest, metric_names, paired_test, per_user_metrics
from cprec_core.rec.finetune import load_runs
from cprec_core.schema import REC_RANKS, REPORT_METRICS, REPORT_PER_USER

REFERENCE = "cpt"
TEST_NAMES = {"wilcoxon": "Wilcoxon signed-rank test", "ttest": "paired t-test"}
SIGNIFICANCE_METRIC = "NDCG@10"

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
        else ("a small causal transformer over the user's items")
    )
    ids = " plus a learned id vector per item," if cfg.finetune.item_id_embedding else ""
    return f"the {which} LLM; {MODE_TEXT[mode]}{ids} and {user} predict the next item (InfoNCE loss)." + (
        " cpt vs base isolates the effect of CPT." if variant.startswith("base") else ""
    )


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given)."""
    m = len(p_values)
    order = np.argsort(p_values)
    adjusted = np.empty(m)
    running = 0.0
    for i, idx in enumerate(order):
        running = max(running, min(1.0, (m - i) * p_values[idx]))
        adjusted[idx] = running
    return adjusted.tolist()


def collect(runs: list[dict[str, Any]], ks: list[int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-run mean metrics (long format) and per-user test rank + NDCG@10, from REC_RANKS."""
    metric_rows, user_frames = [], []
    for run in runs:
        ranks = read_table(REC_RANKS, Path(run["out_dir"])).to_pandas()
        for split, part in ranks.groupby("split", sort=True):
            per_user = per_user_metrics(part["rank"].to_numpy(), ks)
            for name in metric_names(ks):
                metric_rows.append(
                    (
                        run["domain"],
                        run["variant"],
                        int(run["seed"]),
                        split,
                        name,
                        float(per_user[name].mean()),
                    )
                )
            if split == "test":
                ndcg10 = per_user_metrics(part["rank"].to_numpy(), [10])["NDCG@10"]
                user_frames.append(
                    pd.DataFrame(
                        {
                            "domain": run["domain"],
                            "variant": run["variant"],
                            "seed": int(run["seed"]),
                            "user_id": part["user_id"].to_numpy(),
                            "rank": part["rank"].to_numpy(),
                            "ndcg_at_10": ndcg10,
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


def summary_table(metrics: pd.DataFrame, domain: str, variants: list[str], ks: list[int]) -> str:
    """Markdown table of test metrics, mean ± std over seeds, one row per variant."""
    names = metric_names(ks)
    test = metrics[(metrics.domain == domain) & (metrics.split == "test")]
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
    per_user: pd.DataFrame, domain: str, variants: list[str], test: str
) -> dict[str, PairedTest]:
    """cpt vs each other variant: per-user test NDCG@10 averaged over seeds, paired over users.

    Keyed by the other variant; empty when cpt was not run.
    """
    part = per_user[per_user.domain == domain]
    by_user = part.groupby(["variant", "user_id"])["ndcg_at_10"].mean().unstack("variant")
    if REFERENCE not in by_user:
        return {}
    return {
        v: paired_test(by_user[REFERENCE].to_numpy(), by_user[v].to_numpy(), test)
        for v in variants
        if v != REFERENCE and v in by_user
    }


def significance_table(tests: dict[str, PairedTest], alpha: float) -> str:
    """Markdown table with a plain-language verdict per comparison (verdict on Holm-adjusted p)."""
    adjusted = holm([t.p_value for t in tests.values()])
    lines = [
        f"| comparison | users | {REFERENCE} NDCG@10 | other NDCG@10 | test | p-value | Holm p | reading |",
        "|---|---:|---:|---:|---|---:|---:|---|",
    ]
    for (other, t), p_holm in zip(tests.items(), adjusted, strict=True):
        better = "higher" if t.mean_a > t.mean_b else "lower" if t.mean_a < t.mean_b else "equal"
        verdict = (
            f"{REFERENCE} is {better}, and that is unlikely to be chance (p < {alpha})"
            if p_holm < alpha
            else f"{REFERENCE} is {better}, but not distinguishable from chance at this size"
        )
        lines.append(
            f"| {REFERENCE} vs {other} | {t.n_users} | {t.mean_a:.4f} | {t.mean_b:.4f} | {t.test} | "
            f"{t.p_value:.3g} | {p_holm:.3g} | {verdict} |"
        )
    return "\n".join(lines)


def plot_metrics(metrics: pd.DataFrame, domain: str, variants: list[str], ks: list[int], path: Path) -> None:
    """Grouped bars: test metrics per variant, error bars = std over seeds."""
    names = metric_names(ks)
    test = metrics[(metrics.domain == domain) & (metrics.split == "test")]
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
            color=colors[r["variant"]],
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
            f"| {d} | {r['n_users']} | {r['n_items']} | {r['n_train_events']} | "
            f"{r['n_users']} | {r['n_users']} |"
        )
    return "\n".join(lines)


def _training_table(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| domain | variant | seed | epochs run | best epoch | trainable params | seconds |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        lines.append(
            f"| {r['domain']} | {r['variant']} | {r['seed']} | {r['epochs_run']} | "
            f"{r['best_epoch'] or '-'} | "
            f"{r['trainable_params']} | {r['seconds']:.1f} |"
        )
    return "\n".join(lines)


def render_report(
    cfg: Config,
    runs: list[dict[str, Any]],
    results_md: dict[str, str],
    signif_md: dict[str, str],
    claim: dict[str, str],
    curves: dict[str, bool],
) -> str:
    """report.md: for a reader who never saw the code."""
    ev, ft = cfg.evaluate, cfg.finetune
    domains = cfg.domains.downstream
    variants = [v for v in ft.variants if any(r["variant"] == v for r in runs)]
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
        "## Data",
        "",
        "Leave-one-out per user: each user's last interaction is the test target, the one before it the "
        "validation target (used only to stop training), the rest is training history.",
        "",
        _data_table(runs, domains),
        "",
        "## How it was measured",
        "",
        "- Every item of the domain is ranked for every user (no sampled negatives); items the user already "
        "interacted with are removed from the ranking, the target never is.",
        "- Ties count against the target (pessimistic): a model that scores everything equally gets "
        "no credit.",
        f"- Recall@K (= hit rate: the target is in the top K), NDCG@K (1/log2(rank+2) when in the top K, "
        f"rewarding higher positions), MRR (1/(rank+1)); K in {ev.ks}. Higher is better; all lie in [0, 1].",
        f"- {len(ev.seeds)} seed(s) {ev.seeds}; tables show mean ± sample standard deviation over seeds. "
        "zero-shot and popularity involve no randomness, so their std is 0.",
        f"- Trained variants: at most {ft.max_epochs} epochs, stopped after {ft.patience} epochs without a "
        f"better validation NDCG@10; user model width {ft.hidden_size}, {ft.num_layers} layer(s), last "
        f"{ft.max_seq_len} items; item encoder `{ft.encoder_mode}` with `{ft.item_pooling}` pooling.",
        "",
        "## Results (test split)",
        "",
    ]
    for d in domains:
        out += [f"### {d}", "", results_md[d], "", f"![test metrics](plots/metrics_{d}.png)", ""]
    out += [
        "## Is the difference real? (paired significance)",
        "",
        f"For each user, test NDCG@10 is averaged over seeds; `{REFERENCE}` is compared with every other "
        f"variant on the same users with a two-sided {TEST_NAMES[ev.test]}. "
        f"A p-value below {ev.alpha} means a difference this large would rarely appear if the two variants "
        "were equally good. Holm's correction accounts for making several comparisons at once; the reading "
        "uses it.",
        "",
    ]
    for d in domains:
        out += [f"### {d}", "", signif_md[d], "", claim[d], ""]
    out += ["## Training", "", _training_table(runs), ""]
    out += [f"![training curves, {d}](plots/curves_{d}.png)" for d in domains if curves[d]]
    return "\n".join(out) + "\n"


def claim_verdict(t: PairedTest, p_adjusted: float, alpha: float) -> str:
    """A paper claim "cpt beats the other" read off one paired test (mean_a = cpt)."""
    if t.mean_a > t.mean_b and p_adjusted < alpha:
        return "supported"
    if t.mean_a > t.mean_b:
        return "pointing the right way but not significant"
    return "not supported"


def claim_line(tests: dict[str, PairedTest], alpha: float) -> str:
    """PAPER.md claim 1 (cpt beats base) read off the significance results of one domain."""
    if "base" not in tests:
        return "Claim 1 (CPT then fine-tune beats fine-tune only): not tested here (cpt or base not run)."
    t, p = tests["base"], holm([x.p_value for x in tests.values()])[list(tests).index("base")]
    return (
        f"**Claim 1 (CPT then fine-tune beats fine-tune only): {claim_verdict(t, p, alpha)}** "
        f"(NDCG@10 {t.mean_a:.4f} vs {t.mean_b:.4f}, Holm p = {p:.3g})."
    )


@holds_run_lock
def evaluate_run(cfg: Config) -> dict[str, Any]:
    """Read the finetune stage's runs (it must have run), write reports/<run>/, return its tables.

    Returns {"report_dir", "tables": {domain: results markdown}, "significance": {domain: markdown},
    "report_md": str, "runs": n}.
    """
    ev = cfg.evaluate
    runs = load_runs(cfg)["runs"]
    metrics, per_user = collect(runs, ev.ks)
    variants = list(cfg.finetune.variants)
    results_md, signif_md, claim, curves = {}, {}, {}, {}
    out_dir = cfg.root / "reports" / cfg.name
    with atomic_dir(out_dir) as tmp:
        (tmp / "plots").mkdir()
        for d in cfg.domains.downstream:
            results_md[d] = summary_table(metrics, d, variants, ev.ks)
            tests = significance(per_user, d, variants, ev.test)
            signif_md[d] = significance_table(tests, ev.alpha)
            claim[d] = claim_line(tests, ev.alpha)
            plot_metrics(metrics, d, variants, ev.ks, tmp / "plots" / f"metrics_{d}.png")
            curves[d] = plot_curves(runs, d, variants, tmp / "plots" / f"curves_{d}.png")
        write_table(REPORT_METRICS, tmp, pa.Table.from_pandas(metrics, preserve_index=False))
        write_table(REPORT_PER_USER, tmp, pa.Table.from_pandas(per_user, preserve_index=False))
        report_md = render_report(cfg, runs, results_md, signif_md, claim, curves)
        (tmp / "report.md").write_text(report_md)
        finish_manifest(
            tmp, "report", len(metrics), None, config_hash(cfg.evaluate, cfg.finetune, cfg.domains)
        )
    return {
        "report_dir": str(out_dir),
        "tables": results_md,
        "significance": signif_md,
        "report_md": report_md,
        "runs": len(runs),
    }
