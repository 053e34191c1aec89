"""Render BENCHMARKS.md (and the scaling plots) from the benchmark JSON files in a results dir.

Ratios come first, absolute figures second; every section names the machine load while it ran
and the exact command that reproduces it. A target line says MET or MISSED and by how much.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

GIB = 1 << 30


def _gib(b: float) -> str:
    return f"{b / GIB:.2f} GiB"


def _verdict(ok: bool) -> str:
    return "**MET**" if ok else "**MISSED**"


def _head(rec: dict[str, Any], title: str) -> list[str]:
    la, lb = rec["loadavg_start"], rec["loadavg_end"]
    return [
        f"## {title}",
        "",
        f"`{rec['command']}` — started {rec['started_utc']}, {rec['seconds']} s; "
        f"load average (1/5/15 min) {la[0]}/{la[1]}/{la[2]} at start, {lb[0]}/{lb[1]}/{lb[2]} at end.",
        "",
    ]


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return [*out, ""]


def _plot_behaviors(sizes: list[dict[str, Any]], path: Path) -> None:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    names = sorted({n for s in sizes for n in s["contenders"]})
    for name in names:
        pts = [(s["rows"], s["contenders"][name]) for s in sizes if name in s["contenders"]]
        xs = [p[0] for p in pts]
        ax1.plot(xs, [p[1]["seconds"] for p in pts], "o-", label=name)
        ax2.plot(xs, [p[1]["peak_rss_bytes"] / GIB for p in pts], "o-", label=name)
    for ax, label in ((ax1, "seconds"), (ax2, "peak RSS (GiB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("bronze interactions")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    ax1.set_title("behaviors: time vs rows")
    ax2.set_title("behaviors: peak RSS vs rows")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _events_only(contenders: dict[str, Any], name: str) -> str:
    """The ratio against the contender's silver.events alone, when it was recorded."""
    ref = contenders[name]
    if "events_seconds" not in ref:
        return ""
    ratio = ref["events_seconds"] / contenders["project"]["seconds"]
    return f" (against its silver.events alone: {ratio:.2f}×)"


def _behaviors(rec: dict[str, Any], out_dir: Path, results: Path) -> list[str]:
    r = rec["result"]
    lines = _head(rec, "1. behaviors (DuckDB SQL) vs pandas vs Polars")
    rows = []
    for s in r["sizes"]:
        c = s["contenders"]
        base = c["project"]["seconds"]
        for name, v in c.items():
            rows.append(
                [
                    f"{s['rows']:,}",
                    name,
                    f"{v['seconds'] / base:.2f}×" if name != "project" else "1.00×",
                    f"{v['events_seconds'] / base:.2f}×" if "events_seconds" in v else "-",
                    f"{v['seconds']:.1f}",
                    _gib(v["peak_rss_bytes"]),
                    f"{v['rows']:,}",
                    v["kcore_iterations"],
                    f"{v['load_before']:.1f}",
                    "yes" if name == "project" else ("yes" if s["identical"].get(name) else "NO"),
                ]
            )
    lines += [
        "Every contender writes the stage's four outputs (silver.events, silver.items, silver.mixed, "
        "silver.stats). Time ratio = contender seconds / project seconds (> 1: the project is faster). "
        "'events only' = the contender's seconds until its silver.events was written (all the "
        "references wrote before 2026-12-03) / the project's whole stage. 'identical' = the "
        "contender's four tables equal the project's, sorted by their keys.",
        "",
    ]
    lines += _table(
        [
            "interactions",
            "contender",
            "time ratio",
            "events only",
            "seconds",
            "peak RSS",
            "events out",
            "k-core passes",
            "load",
            "identical",
        ],
        rows,
    )
    with_refs = [s for s in r["sizes"] if "pandas" in s["contenders"]]
    if with_refs:
        s = with_refs[-1]
        c = s["contenders"]
        vs_pd = c["pandas"]["seconds"] / c["project"]["seconds"]
        lines.append(
            f"- Target ≥ 3× pandas (aim 10×) at {s['rows']:,}: {vs_pd:.2f}× → {_verdict(vs_pd >= 3)}"
            + _events_only(c, "pandas")
        )
        if "polars" in c:
            vs_pl = c["polars"]["seconds"] / c["project"]["seconds"]
            lines.append(
                f"- Target ≥ 1.0× Polars at {s['rows']:,}: {vs_pl:.2f}× → {_verdict(vs_pl >= 1)}"
                + _events_only(c, "polars")
            )
    big = r["sizes"][-1]
    rss = big["contenders"]["project"]["peak_rss_bytes"]
    lines.append(
        f"- Target peak RSS < 4 GiB at the largest size ({big['rows']:,}): {_gib(rss)} → "
        f"{_verdict(rss < 4 * GIB)}"
        + ("" if big["rows"] >= 50_000_000 else " (50 M was not run: see the reading below)")
    )
    if r.get("note"):
        lines.append(f"- Note: {r['note']}")
    steps = big["contenders"]["project"]["step_seconds"]
    top = sorted(steps.items(), key=lambda kv: -kv[1])[:6]
    lines += [
        "",
        f"Project time by step at {big['rows']:,} (top 6): " + ", ".join(f"{k} {v:.1f} s" for k, v in top),
    ]
    png = results / "behaviors_scaling.png"
    _plot_behaviors(r["sizes"], png)
    gen = ", ".join(f"{s['rows']:,}: {s['data']['generate_s']} s" for s in r["sizes"])
    lines += [
        "",
        f"![behaviors scaling]({os.path.relpath(png, out_dir)})",
        "",
        f"Bronze was written straight to Parquet by bench/data.py (numpy + pyarrow through DatasetWriter; "
        f"no JSON, no ingest), seconds: {gen}.",
        "",
    ]
    return lines


def _ingest(rec: dict[str, Any]) -> list[str]:
    r = rec["result"]
    c = r["contenders"]
    floor = c["gzip"]["mb_per_s"]
    mb = r["uncompressed_bytes"] / 1e6
    lines = _head(rec, "2. ingest: Amazon-2023 gz JSONL")
    lines.append(
        f"{r['interactions']:,} synthetic interactions + item metadata: {r['files']} files, "
        f"{r['compressed_bytes'] / 1e6:.1f} MB gzip, {r['uncompressed_bytes'] / 1e6:.1f} MB JSON, "
        f"{c['gzip']['rows']:,} lines. MB/s over uncompressed bytes. The project reads the domains on "
        f"{c['project'].get('threads', 1)} thread(s), as the ingest task does by default; gzip, isal and "
        "pandas read the files one after the other."
    )
    lines.append("")
    rows = [
        [
            n,
            f"{v['mb_per_s'] / floor:.1%}",
            f"{v['mb_per_s']:.1f}",
            f"{v['rows_per_s']:,.0f}",
            f"{v['seconds']:.1f}",
            f"{v['cpu_s']:.1f}" if "cpu_s" in v else "-",
            f"{mb / v['cpu_s']:.1f}" if "cpu_s" in v else "-",
            _gib(v["peak_rss_bytes"]),
            f"{v['load_before']:.1f}",
        ]
        for n, v in c.items()
    ]
    header = ["contender", "share of gzip floor", "MB/s", "rows/s", "seconds", "CPU-s", "MB per CPU-s"]
    lines += _table([*header, "peak RSS", "load"], rows)
    share = c["project"]["mb_per_s"] / floor
    vs_pd = c["project"]["mb_per_s"] / c["pandas"]["mb_per_s"]
    share_isal = c["project"]["mb_per_s"] / c["isal"]["mb_per_s"]
    g = r["generic_parquet"]
    lines += [
        f"- Target ≥ 50 % of the gzip floor: {share:.1%} → {_verdict(share >= 0.5)}",
        f"- project vs pandas.read_json: {vs_pd:.2f}× the throughput "
        "(pandas validates nothing and writes nothing)",
        f"- project vs the ISA-L decompression floor: {share_isal:.1%}",
        *_per_cpu_second(c, mb),
        f"- the same {g['rows']:,} interactions as the generic layout's Parquet (one file per domain, "
        f"written from the project's bronze): {g['seconds']:.2f} s, {g['rows_per_s']:,.0f} rows/s, "
        f"peak RSS {_gib(g['peak_rss_bytes'])}",
        "",
    ]
    return lines


def _per_cpu_second(contenders: dict[str, Any], mb: float) -> list[str]:
    """The project's MB per CPU-second against the gzip floor's (one thread), when both were timed."""
    project, floor = contenders["project"], contenders["gzip"]
    if "cpu_s" not in project or "cpu_s" not in floor:
        return []
    per_cpu, floor_per_cpu = mb / project["cpu_s"], mb / floor["cpu_s"]
    cores = project["cpu_s"] / project["seconds"]
    return [
        f"- per CPU-second (every thread of the process): the project reads {per_cpu:.1f} MB, "
        f"{per_cpu / floor_per_cpu:.1%} of the gzip floor's {floor_per_cpu:.1f}; {cores:.2f} cores busy "
        "on average"
    ]


def _pack(rec: dict[str, Any]) -> list[str]:
    r = rec["result"]
    c = r["contenders"]
    lines = _head(rec, "3. corpus render + tokenize + pack")
    lines.append(
        f"Silver from {r['interactions']:,} bronze interactions (bench/data.py → behaviors); "
        f"{r['documents']:,} documents, {r['tokens']:,} tokens, blocks of {r['seq_len']}, "
        f"pack.num_proc={c['pack']['num_proc']}."
    )
    lines.append("")
    rows = [
        [
            "render + pack (project)",
            f"{r['render_pack_tokens_per_s']:,.0f}",
            f"{c['render']['seconds'] + c['pack']['seconds']:.1f}",
            "-",
        ],
        ["render (build_corpus)", "-", f"{c['render']['seconds']:.1f}", _gib(c["render"]["peak_rss_bytes"])],
        [
            "pack (pack_corpus)",
            f"{r['pack_tokens_per_s']:,.0f}",
            f"{c['pack']['seconds']:.1f}",
            _gib(c["pack"]["peak_rss_bytes"]),
        ],
        [
            "reference: HF tokenizer() + concat",
            f"{r['hf_tokens_per_s']:,.0f}",
            f"{c['hf']['seconds']:.1f}",
            _gib(c["hf"]["peak_rss_bytes"]),
        ],
    ]
    lines += _table(["step", "tokens/s", "seconds", "peak RSS"], rows)
    rate = r["render_pack_tokens_per_s"]
    lines += [
        f"- pack vs the HF reference: {r['pack_tokens_per_s'] / r['hf_tokens_per_s']:.2f}× the tokens/s "
        "(same token count)",
        f"- Target render + tokenize + pack ≥ 0.9× the tokenizer reference: {rate:,.0f} tokens/s = "
        f"{rate / r['hf_tokens_per_s']:.2f}× → {_verdict(rate >= 0.9 * r['hf_tokens_per_s'])}; "
        f"pack alone {r['pack_tokens_per_s']:,.0f}",
        f"- Target waste < 1 %: {r['waste_pct']:.4f} % → {_verdict(r['waste_pct'] < 1)}",
        "",
    ]
    return lines


def _cpt(rec: dict[str, Any]) -> list[str]:
    r = rec["result"]
    lines = _head(rec, "4. CPT step throughput: DeepSpeed path vs plain PyTorch (CPU)")
    rows = []
    for model, p in r.items():
        if "skipped" in p:
            rows.append([model, "-", "-", "-", f"skipped: {p['skipped']}"])
            continue
        for name, v in p["contenders"].items():
            rows.append(
                [
                    model,
                    name,
                    f"{v['tokens_per_s'] / p['contenders']['plain']['tokens_per_s']:.2f}×",
                    f"{v['tokens_per_s']:,.0f}",
                    f"{p['steps']} steps ({p['warmup_steps']} warm-up), micro batch {p['micro_batch']}, "
                    f"final loss {v['final_loss']:.3f}, peak RSS {_gib(v['peak_rss_bytes'])}, "
                    f"load {v['load_before']:.1f}",
                ]
            )
    lines += _table(["model", "path", "vs plain", "tokens/s", "details"], rows)
    for model, p in r.items():
        if "ratio" in p:
            lines.append(
                f"- {model}: DeepSpeed within 10 % of plain (≥ 0.90×): {p['ratio']:.2f}× → "
                f"{_verdict(p['ratio'] >= 0.9)}"
            )
    return [*lines, ""]


def _users_per_s(r: dict[str, Any]) -> list[str]:
    """Contenders' users/s against the per-user loop, and the >= 5x target."""
    c = r["contenders"]
    rows = [
        [
            n,
            f"{v['users_per_s'] / c['loop']['users_per_s']:.1f}×",
            f"{v['users_per_s']:,.0f}",
            f"{v['seconds']:.1f}",
            _gib(v["peak_rss_bytes"]),
            f"{v['load_before']:.1f}",
        ]
        for n, v in c.items()
    ]
    lines = _table(["contender", "vs loop", "users/s", "seconds", "peak RSS", "load"], rows)
    return [*lines, f"- Target ≥ 5× the per-user loop: {r['ratio']:.1f}× → {_verdict(r['ratio'] >= 5)}", ""]


def _ranking(rec: dict[str, Any]) -> list[str]:
    r = rec["result"]
    lines = _head(rec, "5. full-ranking evaluation")
    lines.append(
        f"{r['users']:,} users × {r['items']:,} items, test split, one SASRec forward per scoring call; "
        f"ranks identical and metrics equal to 1e-12: {r['identical']}."
    )
    return [*lines, "", *_users_per_s(r)]


def _recommend(rec: dict[str, Any]) -> list[str]:
    r = rec["result"]
    lines = _head(rec, "7. top-K recommendations (the recommend stage)")
    lines.append(
        f"{r['users']:,} users × {r['items']:,} items, top {r['k']}, whole histories masked, one SASRec "
        f"forward per scoring call; every user's list identical: {r['identical']}."
    )
    return [*lines, "", *_users_per_s(r)]


def _cache(rec: dict[str, Any]) -> list[str]:
    lines = _head(rec, "6. stage cache and one-domain refresh (real Prefect flow)")
    for r in rec["result"]["sizes"]:
        lines += _cache_size(r)
    return lines


def _cache_size(r: dict[str, Any]) -> list[str]:
    runs, refreshes = r["runs"], r["refreshes"]
    cold = runs["cold"]["seconds"]
    refresh_labels = {
        f"refresh:{d}": f"one-domain refresh: {d} ({x['role']}, ends {x['status']})"
        for d, x in refreshes.items()
    }
    lines = [
        f"{r['interactions']:,} synthetic interactions, 7 domains, stages ingest → behaviors → corpus; "
        "one-domain refreshes, in this order: "
        + ", ".join(f"{d} ({x['role']}, {x['share']:.1%} of the interactions)" for d, x in refreshes.items())
        + ".",
        "",
    ]
    labels = {
        "cold": "cold (empty run root)",
        "rerun": "unchanged rerun",
        "refresh0": "refresh right after the run",
        **refresh_labels,
        "dask": "cold, ingest and behaviors on a 2-worker Dask LocalCluster (cluster start included)",
    }
    rows = [
        [
            labels[k],
            f"{v['seconds'] / cold:.1%}",
            f"{v['seconds']:.1f}",
            ", ".join(f"{s} {t:.1f}" for s, t in v["stage_seconds"].items()),
        ]
        for k, v in runs.items()
    ]
    lines += _table(["run", "of cold", "seconds", "stage seconds"], rows)
    lines.append(
        f"- Target unchanged rerun ≤ 5 % of cold: {r['rerun_pct_of_cold']:.1f} % → "
        f"{_verdict(r['rerun_pct_of_cold'] <= 5)}"
    )
    for d, x in refreshes.items():
        share = 100 * x["share"]
        lines.append(
            f"- Target one-domain refresh ≤ 2× the domain's share of a cold run, {d} ({x['role']}; "
            f"{share:.1f} %, so ≤ {2 * share:.1f} %): whole refresh {x['pct_of_cold']:.1f} % of cold → "
            f"{_verdict(x['pct_of_cold'] <= 2 * share)}; its ingest {x['ingest_pct_of_cold_ingest']:.1f} % "
            f"of the cold ingest → {_verdict(x['ingest_pct_of_cold_ingest'] <= 2 * share)}"
        )
        if x["role"] == "pretrain":
            reach = 100 * x["reach"]
            lines.append(
                f"  - {d}'s users hold {x['mixed_events_of_its_users']:.1%} of the mixed sequences' events, "
                f"which change with it: its reach (its events and those, of all domain and mixed events) "
                f"is {reach:.1f} %; refresh ≤ 2× its reach ({2 * reach:.1f} %) → "
                f"{_verdict(x['pct_of_cold'] <= 2 * reach)}"
            )
    return [*lines, ""]


SECTIONS = {
    "behaviors": None,
    "ingest": _ingest,
    "pack": _pack,
    "cpt": _cpt,
    "ranking": _ranking,
    "cache": _cache,
    "recommend": _recommend,
}


def render(results: Path, out: Path, reading: Path | None = None) -> None:
    """Write the report for every `<name>.json` in `results`."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    recs = {
        n: json.loads((results / f"{n}.json").read_text())
        for n in SECTIONS
        if (results / f"{n}.json").is_file()
    }
    if not recs:
        raise FileNotFoundError(f"no benchmark results in {results}")
    m = next(iter(recs.values()))["machine"]
    quick = any(r["quick"] for r in recs.values())
    v = m["versions"]
    lines = [
        "# Benchmarks"
        + (" (QUICK sizes: checks that the benchmarks work; timings mean little)" if quick else ""),
        "",
        "Generated by `make bench` (`.venv/bin/python -m bench.run`) from the JSON files in "
        f"`{os.path.relpath(results, out.parent)}/`; rerun one benchmark with "
        "`.venv/bin/python -m bench.run --only NAME`. Every contender runs in its own process; "
        "'peak RSS' is the largest resident size of its process tree. The machine is shared: read "
        "the ratios (contenders measured back to back in the same run) before the absolute figures, "
        "and the load average beside them (2 cores: a load above 2 means waiting for a CPU).",
        "",
        f"Machine: {m['cpu']}, {m['nproc']} cores, {m['ram_gib']} GiB RAM, Linux {m['kernel']}; "
        + ", ".join(f"{k} {val}" for k, val in v.items())
        + ".",
        "",
    ]
    for name, rec in recs.items():
        lines += _behaviors(rec, out.parent, results) if name == "behaviors" else SECTIONS[name](rec)  # type: ignore[misc]
    if reading is not None and reading.is_file():
        lines += [reading.read_text()]
    out.write_text("\n".join(lines) + "\n")
