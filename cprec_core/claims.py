"""The paper's claims as numbers: effect, bootstrap interval, paired test, verdict (PAPER.md, "Claims
to check"), and `claims.json`, the one machine-readable place they live.

Reads per-user test metrics (a REPORT_PER_USER table: one row per domain, variant, seed, user);
writes `claims.json` beside a report. The evaluate stage writes the claims one run can test
(CPT against base per encoder mode, and the zero-shot pair); the experiment writes every claim
over all its arms. The CLI and the reports read this file, never the markdown.

For a comparison "a beats b" in one domain, on per-user test NDCG@10 (history masked):
- effect = mean over users of (a's mean over its seeds - b's mean over its seeds);
- interval: a cluster bootstrap (`cluster_bootstrap`): users are resampled, and so are each
  variant's seeds, because a seed (a CPT run, or a fine-tuning run) is one draw of the method, and
  users share it. For a CPT variant the seeds are CPT seeds; the interval then speaks about CPT as a
  method, not about one checkpoint;
- p: a two-sided paired test over users (evaluate.test) on the per-user seed means, then Holm's
  correction over every comparison of the file;
- verdict: `supported` when the interval lies above 0 and Holm's p is below evaluate.alpha,
  `contradicted` when the interval lies below 0 with Holm's p below alpha, else `inconclusive`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cprec_core.artifacts import atomic_write_text
from cprec_core.errors import UserError
from cprec_core.metrics import paired_test

CLAIMS_FILE = "claims.json"
SCHEMA_VERSION = 1
METRIC = "NDCG@10"
N_BOOT = 2000
VERDICTS = ("supported", "contradicted", "inconclusive")


class ClaimsError(UserError, ValueError):
    """claims.json is missing or does not follow its schema; the message names the file and field."""


@dataclass(frozen=True)
class Comparison:
    """One claim tested in one domain: does variant `a` beat variant `b`?"""

    claim: str  # "1", "1-control", "2", "3", "zero-shot"
    text: str
    domain: str
    a: str
    b: str
    mean_a: float
    mean_b: float
    effect: float
    ci_low: float
    ci_high: float
    p_value: float
    p_holm: float
    test: str
    n_users: int
    n_seeds_a: int
    n_seeds_b: int
    verdict: str


def cluster_bootstrap(
    a: np.ndarray, b: np.ndarray, n_boot: int = N_BOOT, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """(effect, low, high) of mean(a) - mean(b) for per-seed, per-user values a [Sa, U], b [Sb, U].

    Each bootstrap draw resamples the users (the same ones for a and b: the comparison is paired)
    and, independently, a's seeds and b's seeds, with replacement; the interval is the percentile
    interval of the drawn effects at `level`.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or not a.size or not b.size:
        raise ValueError(
            f"cluster_bootstrap: expected [seeds, users] arrays over the same users, got {a.shape}, {b.shape}"
        )
    rng = np.random.default_rng(seed)
    n_users = a.shape[1]
    effects = np.empty(n_boot)
    for i in range(n_boot):
        weights = np.bincount(rng.integers(0, n_users, n_users), minlength=n_users) / n_users
        per_seed_a, per_seed_b = a @ weights, b @ weights
        effects[i] = (
            per_seed_a[rng.integers(0, len(a), len(a))].mean()
            - per_seed_b[rng.integers(0, len(b), len(b))].mean()
        )
    tail = (1 - level) / 2
    low, high = np.quantile(effects, [tail, 1 - tail])
    return float(a.mean() - b.mean()), float(low), float(high)


def seed_matrix(
    per_user: pd.DataFrame, domain: str, variant: str, users: list[str], column: str
) -> np.ndarray:
    """[seeds, users] of one variant's per-user values (users in the given order)."""
    part = per_user[(per_user.domain == domain) & (per_user.variant == variant)]
    wide = part.pivot_table(index="seed", columns="user_id", values=column)
    missing = set(users) - set(wide.columns)
    if missing:
        raise ValueError(
            f"{domain}/{variant}: no per-user value for {len(missing)} users, e.g. {sorted(missing)[0]!r}"
        )
    return wide[users].to_numpy()


def verdict(effect_low: float, effect_high: float, p_holm: float, alpha: float) -> str:
    if p_holm < alpha and effect_low > 0:
        return "supported"
    if p_holm < alpha and effect_high < 0:
        return "contradicted"
    return "inconclusive"


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given)."""
    m = len(p_values)
    order = np.argsort(p_values, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for i, idx in enumerate(order):
        running = max(running, min(1.0, (m - i) * p_values[idx]))
        adjusted[idx] = running
    return adjusted.tolist()


def compare(
    per_user: pd.DataFrame,
    plan: list[tuple[str, str, str, str, str]],
    test: str,
    alpha: float,
    column: str = "ndcg_at_10",
) -> list[Comparison]:
    """Test every (claim, text, domain, a, b) of `plan` whose two variants are present; Holm over all."""
    rows = []
    for claim, text, domain, a, b in plan:
        part = per_user[per_user.domain == domain]
        present = set(part.variant)
        if a not in present or b not in present:
            continue
        users = sorted(set(part[part.variant == a].user_id) & set(part[part.variant == b].user_id))
        ma, mb = (
            seed_matrix(per_user, domain, a, users, column),
            seed_matrix(per_user, domain, b, users, column),
        )
        effect, low, high = cluster_bootstrap(ma, mb)
        t = paired_test(ma.mean(0), mb.mean(0), test)
        rows.append((claim, text, domain, a, b, t, effect, low, high, len(ma), len(mb)))
    adjusted = holm([r[5].p_value for r in rows])
    return [
        Comparison(
            claim,
            text,
            domain,
            a,
            b,
            t.mean_a,
            t.mean_b,
            effect,
            low,
            high,
            t.p_value,
            p,
            t.test,
            t.n_users,
            na,
            nb,
            verdict(low, high, p, alpha),
        )
        for (claim, text, domain, a, b, t, effect, low, high, na, nb), p in zip(rows, adjusted, strict=True)
    ]


def summarize(
    comparisons: list[Comparison], per_user: pd.DataFrame, domains: list[str], column: str = "ndcg_at_10"
) -> list[dict[str, Any]]:
    """One verdict per (claim, pair of variants) over every downstream domain, plus Claim 4.

    A claim holds when it is supported in every domain; it is contradicted when any domain
    contradicts it; otherwise it is inconclusive (or not tested, when no domain could test it).
    Claim 4 (stable across seeds and domains), for each Claim 1 pair: a's mean beats b's at every
    (domain, seed of a), and Claim 1 is supported in every domain, with at least two domains.
    """
    out: list[dict[str, Any]] = []
    pairs = list(dict.fromkeys((c.claim, c.text, c.a, c.b) for c in comparisons))
    for claim, text, a, b in pairs:
        mine = [c for c in comparisons if (c.claim, c.a, c.b) == (claim, a, b)]
        verdicts = [c.verdict for c in mine]
        overall = (
            "contradicted"
            if "contradicted" in verdicts
            else "supported"
            if all(v == "supported" for v in verdicts) and len(mine) == len(domains)
            else "inconclusive"
        )
        evidence = "; ".join(
            f"{c.domain}: {c.effect:+.4f} [{c.ci_low:+.4f}, {c.ci_high:+.4f}], Holm p {c.p_holm:.2g}"
            for c in mine
        )
        out.append({"claim": claim, "text": text, "a": a, "b": b, "verdict": overall, "evidence": evidence})
        if claim != "1":
            continue
        wins, total = 0, 0
        for c in mine:
            part = per_user[per_user.domain == c.domain]
            base_mean = part[part.variant == b][column].mean()
            for _, seed_part in part[part.variant == a].groupby("seed"):
                wins += int(seed_part[column].mean() > base_mean)
                total += 1
        stable = overall == "supported" and wins == total and len(domains) >= 2
        out.append(
            {
                "claim": "4",
                "text": "Gains are stable across seeds and domains",
                "a": a,
                "b": b,
                "verdict": "contradicted"
                if overall == "contradicted"
                else "supported"
                if stable
                else "inconclusive",
                "evidence": f"{a} above {b} at {wins} of {total} (domain, seed) pairs; Claim 1 {overall} "
                f"over {len(domains)} domain(s)",
            }
        )
    return out


def write_claims(
    directory: Path, comparisons: list[Comparison], summary: list[dict[str, Any]], alpha: float
) -> Path:
    """Write `claims.json` (atomically) into `directory`."""
    doc = {
        "version": SCHEMA_VERSION,
        "metric": METRIC,
        "protocol": "masked",
        "alpha": alpha,
        "n_boot": N_BOOT,
        "comparisons": [asdict(c) for c in comparisons],
        "summary": summary,
    }
    path = Path(directory) / CLAIMS_FILE
    atomic_write_text(path, json.dumps(doc, indent=2))
    return path


def read_claims(path: Path) -> dict[str, Any]:
    """Load and check a claims.json; raises ClaimsError naming the field that is wrong."""
    path = Path(path)
    if not path.is_file():
        raise ClaimsError(f"{path}: no claims file (run the evaluate stage or the experiment)")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ClaimsError(f"{path}: not JSON: {e}") from None
    if doc.get("version") != SCHEMA_VERSION:
        raise ClaimsError(f"{path}: field version: expected {SCHEMA_VERSION}, got {doc.get('version')!r}")
    names = {f.name: f.type for f in fields(Comparison)}
    for i, c in enumerate(doc.get("comparisons", [])):
        if set(c) != set(names):
            raise ClaimsError(
                f"{path}: comparisons[{i}]: fields {sorted(set(c) ^ set(names))} differ from the schema"
            )
        if c["verdict"] not in VERDICTS:
            raise ClaimsError(f"{path}: comparisons[{i}].verdict: {c['verdict']!r} not in {VERDICTS}")
        for key in ("effect", "ci_low", "ci_high", "p_value", "p_holm"):
            if not isinstance(c[key], int | float) or math.isnan(c[key]):
                raise ClaimsError(f"{path}: comparisons[{i}].{key}: expected a number, got {c[key]!r}")
        if not c["ci_low"] <= c["ci_high"]:
            raise ClaimsError(f"{path}: comparisons[{i}]: ci_low {c['ci_low']} > ci_high {c['ci_high']}")
    for i, s in enumerate(doc.get("summary", [])):
        if s.get("verdict") not in (*VERDICTS, "not tested"):
            raise ClaimsError(f"{path}: summary[{i}].verdict: {s.get('verdict')!r}")
    return doc
