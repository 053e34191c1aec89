"""The `cprec` command line: synthetic data, pipeline runs, models, deployments, refresh.

Every command turns the errors a user can cause (config keys, bad files, failed expectations)
into one red line naming what is wrong, and exits 2; tracebacks are for bugs.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cprec_core.artifacts import PROJECT_ROOT, ArtifactError
from cprec_core.config import Config, ConfigError, load_config
from cprec_core.errors import UserError
from cprec_core.resources import shipped_configs

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="CPRec: all-domain continual pre-training."
)
console = Console(soft_wrap=True)  # one error = one line, even in a narrow or non-TTY terminal
DEMO_CONFIG = shipped_configs()["demo"]

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config (default: built-in defaults)")
]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override, e.g. --set corpus.mix_ratio=0.3")]


def _user_errors() -> tuple[type[BaseException], ...]:
    """What a user can fix: one line, exit 2 (cprec_core.errors); anything else keeps its traceback."""
    return (UserError, FileNotFoundError)


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(2)


def _load(config: Path | None, overrides: list[str] | None) -> Config:
    try:
        return load_config(config, overrides or [])
    except ConfigError as e:
        _fail(str(e))
        raise  # unreachable: _fail exits


@app.command()
def synth(config: ConfigOpt = None, overrides: SetOpt = None) -> None:
    """Write the synthetic multi-domain logs (Amazon-Reviews-2023 format) to synth.out_dir."""
    from cprec_core.ingest.synth import ensure_synthetic

    cfg = _load(config, overrides)
    started = time.perf_counter()
    try:
        made = ensure_synthetic(cfg.synth.out_dir, cfg.synth)
    except _user_errors() as e:
        _fail(str(e))
    state = "written" if made else "already up to date for this synth config"
    console.print(f"{cfg.synth.out_dir}: {state} ({time.perf_counter() - started:.1f} s)")


@app.command()
def run(
    config: ConfigOpt = None,
    stages: Annotated[str, typer.Option(help="comma-separated stages or 'all'")] = "all",
    overrides: SetOpt = None,
) -> None:
    """Run pipeline stages as the `cprec` Prefect flow (ephemeral API unless PREFECT_API_URL is set)."""
    from cprec_core.stages import parse_stages

    cfg = _load(config, overrides)
    try:
        parse_stages(stages)
    except ValueError as e:
        _fail(f"--stages: {e}")
    _run_flow(config, stages, overrides or [], cfg)


def _run_flow(config: Path | None, stages: str, overrides: list[str], cfg: Config) -> None:
    from flows.cprec import cprec

    started = time.perf_counter()
    try:
        results = cprec(config=str(config) if config else None, stages=stages, overrides=overrides)
    except _user_errors() as e:
        _fail(str(e))
    print_outputs(cfg, results, time.perf_counter() - started)
    if "evaluate" in results:
        print_results(cfg)


RESULT_METRICS = ("NDCG@K", "Recall@K", "MRR")


def print_results(cfg: Config) -> None:
    """A compact view of the evaluate stage's report: test metrics per variant, the Claim 1 line."""
    import pyarrow.compute as pc

    from cprec_core.artifacts import read_table
    from cprec_core.claims import CLAIMS_FILE, read_claims
    from cprec_core.schema import REPORT_METRICS

    report_dir = cfg.root / "reports" / cfg.name
    k = 10 if 10 in cfg.evaluate.ks else cfg.evaluate.ks[0]
    names = [m.replace("@K", f"@{k}") for m in RESULT_METRICS]
    metrics = read_table(REPORT_METRICS, report_dir)
    test = metrics.filter(
        pc.and_(pc.equal(metrics["split"], "test"), pc.equal(metrics["protocol"], "masked"))
    ).to_pandas()
    stats = test.groupby(["domain", "variant", "metric"])["value"].agg(["mean", "std"]).fillna(0.0)
    for domain in cfg.eval_domains:
        table = Table(title=f"{domain}: test metrics, mean ± std over seeds {cfg.evaluate.seeds}")
        table.add_column("variant")
        for m in names:
            table.add_column(m, justify="right")
        for variant in cfg.finetune.variants:
            if (domain, variant, names[0]) in stats.index:
                cells = [stats.loc[(domain, variant, m)] for m in names]
                table.add_row(variant, *[f"{c['mean']:.4f} ± {c['std']:.4f}" for c in cells])
        console.print(table)
    print_claims(read_claims(report_dir / CLAIMS_FILE)["summary"])
    console.print(f"full report (intervals, p-values, plots, training curves): {report_dir / 'report.md'}")


def print_claims(summary: list[dict]) -> None:
    """The claims' verdicts, read from claims.json."""
    if not summary:
        console.print("claims: none testable in this run (no cpt variant with its base twin)")
        return
    table = Table(title="claims (test NDCG@10, history masked; claims.json)")
    for col in ("claim", "a vs b", "evidence", "verdict"):
        table.add_column(col)
    for row in summary:
        table.add_row(
            f"{row['claim']}. {row['text']}", f"{row['a']} vs {row['b']}", row["evidence"], row["verdict"]
        )
    console.print(table)


def print_outputs(cfg: Config, results: dict, seconds: float) -> None:
    """Where each stage's outputs are and their counts."""
    from cprec_core.artifacts import verify
    from cprec_core.stages import SPECS

    table = Table(title=f"cprec run '{cfg.name}' finished in {seconds:.0f} s")
    for col in ("stage", "output", "rows"):
        table.add_column(col)
    for stage in results:
        for out in SPECS[stage].outputs(cfg):
            try:
                rows = f"{verify(out).rows:,}"
            except ArtifactError:
                rows = "-"
            table.add_row(stage, str(out), rows)
    console.print(table)


@app.command()
def demo(
    stages: Annotated[str, typer.Option(help="comma-separated stages or 'all'")] = "all",
    overrides: SetOpt = None,
) -> None:
    """The embedded default: synthetic data + tiny model through every stage, in-process.

    Ingest generates the synthetic logs on first use (a `synthetic` source in configs/demo.yaml).
    """
    cfg = _load(DEMO_CONFIG, overrides)
    console.rule(f"[bold]cprec demo: {DEMO_CONFIG.name}, run root {cfg.root}")
    _run_flow(DEMO_CONFIG, stages, overrides or [], cfg)


@app.command()
def experiment(
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    arms: Annotated[
        str, typer.Option(help="comma-separated arms: shuffled,domain-only,cosine (default experiment.arms)")
    ] = "config",
) -> None:
    """The paper's claims in one run: every arm at every CPT seed, one report with claims.json."""
    from cprec_core.experiment import ARMS, ExperimentError, plan
    from flows.experiment import experiment as experiment_flow

    cfg = _load(config, overrides)
    selected = (
        list(cfg.experiment.arms) if arms == "config" else [a.strip() for a in arms.split(",") if a.strip()]
    )
    if set(selected) - set(ARMS):
        _fail(f"--arms {arms}: expected some of {', '.join(ARMS)}")
    try:
        runs = plan(cfg, ["main", *selected])
    except ExperimentError as e:
        _fail(f"{config or 'default config'}: {e}")
    arm_names = ", ".join(dict.fromkeys(r.arm for r in runs))
    console.print(f"experiment '{cfg.name}': {len(runs)} pipeline runs, arms {arm_names}")
    started = time.perf_counter()
    try:
        summary = experiment_flow(
            config=str(config) if config else None, overrides=overrides or [], arms=selected
        )
    except _user_errors() as e:
        _fail(str(e))
    console.print(f"experiment '{cfg.name}' finished in {(time.perf_counter() - started) / 60:.1f} min")
    print_claims(summary["summary"])
    console.print(f"full report: {summary['report_dir']}/report.md (claims.json beside it)")


@app.command("prepare-realdata")
def prepare_realdata(
    data: Annotated[Path, typer.Option(help="the shared/data folder")] = PROJECT_ROOT.parent
    / "shared"
    / "data",
    out: Annotated[Path, typer.Option(help="generic-layout output")] = Path("var/raw/realdata"),
) -> None:
    """Convert the research-format Amazon sets in shared/data into the generic layout."""
    from cprec_core.realdata import RealDataError
    from cprec_core.realdata import prepare_realdata as prepare

    if not data.is_dir():
        _fail(f"--data {data}: no such folder (it holds the real Amazon sets; see README)")
    try:
        counts = prepare(data, out, progress=True)
    except RealDataError as e:
        _fail(str(e))
    console.print_json(json.dumps(counts, default=str))


@app.command()
def recommend(
    domain: Annotated[str, typer.Option(help="a downstream domain of the run")],
    user: Annotated[str | None, typer.Option(help="a user id: their history and top-K")] = None,
    sessions: Annotated[
        Path | None, typer.Option(help='JSON lines, each {"items": [item ids in time order]}: top-K for each')
    ] = None,
    k: Annotated[int | None, typer.Option(help="items per user (default recommend.top_k)")] = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Recommendations: a known user's (from the recommend stage) or new sessions' (scored now)."""
    from cprec_core.artifacts import read_table
    from cprec_core.paths import base_model_dir, cpt_dir, serving_dir
    from cprec_core.rec.data import load_domain
    from cprec_core.recommend import RecommendError, read_sessions, recommend_sessions
    from cprec_core.schema import GOLD_RECOMMENDATIONS

    cfg = _load(config, overrides)
    if (user is None) == (sessions is None):
        _fail("give exactly one of --user or --sessions")
    try:
        data = load_domain(cfg.root, domain)
        titles = dict(zip(data.item_ids, data.titles, strict=True))
        if user is not None:
            recs = read_table(GOLD_RECOMMENDATIONS, serving_dir(cfg)).to_pandas()
            mine = recs[(recs.domain == domain) & (recs.user_id == user)].sort_values("rank")
            if mine.empty or user not in data.user_ids:
                raise RecommendError(
                    f"user {user!r} has no recommendations in {domain} (run the recommend stage)"
                )
            u = data.user_ids.index(user)
            history = [*data.train[u].tolist(), int(data.valid_target[u]), int(data.test_target[u])]
            console.print(f"[bold]{user}[/] in {domain}, history ({len(history)} items, oldest first):")
            for i in history:
                console.print(f"  {data.item_ids[i]}  {titles[data.item_ids[i]]}", highlight=False)
            console.print(
                f"[bold]top {len(mine)}[/] ({mine.variant.iloc[0]}, model {mine.model_fingerprint.iloc[0]}):"
            )
            for row in mine.head(k or len(mine)).itertuples():
                console.print(
                    f"  {row.rank:>3}. {row.item_id}  {titles[row.item_id]}  ({row.score:.4f})",
                    highlight=False,
                )
            return
        ranked = recommend_sessions(
            cfg, domain, read_sessions(sessions), cpt_dir(cfg), base_model_dir(cfg), k
        )
    except _user_errors() as e:
        _fail(str(e))
    for n, items in enumerate(ranked):
        print(
            json.dumps(
                {"session": n, "items": [{"item_id": i, "title": titles[i], "score": s} for i, s in items]}
            )
        )


config_app = typer.Typer(no_args_is_help=True, help="The configs cprec ships: a start for your own.")
app.add_typer(config_app, name="config")


@config_app.command("list")
def config_list() -> None:
    """Name and first comment line of every shipped config."""
    for name, path in shipped_configs().items():
        first = next(
            (line.lstrip("# ") for line in path.read_text().splitlines() if line.startswith("#")), ""
        )
        console.print(f"{name:<15} {first}", highlight=False)


@config_app.command("show")
def config_show(name: Annotated[str, typer.Argument(help="a shipped config: demo, realdata, ...")]) -> None:
    """Print a shipped config (redirect it to a file and edit it: `cprec config show demo > my.yaml`)."""
    configs = shipped_configs()
    if name not in configs:
        _fail(f"config {name!r} unknown; shipped: {', '.join(configs)}")
    print(configs[name].read_text(), end="")


export_app = typer.Typer(no_args_is_help=True, help="Export cprec's splits for other tools.")
app.add_typer(export_app, name="export")


@export_app.command("recbole")
def export_recbole(
    domain: Annotated[str, typer.Option(help="a downstream domain of the run")],
    out: Annotated[Path, typer.Option(help="output folder; files go to <out>/<domain>/")],
    config: ConfigOpt = None,
    overrides: SetOpt = None,
) -> None:
    """The domain's split as RecBole atomic files (+ recbole.yaml): RecBole's leave-one-out gives ours."""
    from cprec_core.export import export_recbole as export

    cfg = _load(config, overrides)
    try:
        result = export(cfg.root, domain, out)
    except _user_errors() as e:
        _fail(str(e))
    console.print(
        f"{result['dir']}: {result['interactions']:,} interactions, {result['items']:,} items; "
        f"RecBole settings in {result['dir']}/recbole.yaml"
    )


@app.command("tiny-model")
def tiny_model(
    out: Annotated[Path, typer.Option(help="output directory")],
    config: ConfigOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Build the tiny Llama + BPE tokenizer (trained on the run's corpus) used by the demo and tests."""
    from cprec_core.models import build_tiny_model
    from cprec_core.pack import corpus_texts

    cfg = _load(config, overrides)
    try:
        path = build_tiny_model(out, corpus_texts(cfg), cfg.model.tiny)
    except _user_errors() as e:
        _fail(str(e))
    console.print(f"tiny model saved to {path}")


@app.command("base-model")
def base_model(
    name: Annotated[str, typer.Argument(help="smollm2-135m")],
    out: Annotated[Path, typer.Option(help="output directory")] = Path("var/models/smollm2-135m"),
) -> None:
    """Convert a real base LLM shipped in a PyPI wheel into a local safetensors directory."""
    from cprec_core.models import convert_smollm2

    if name != "smollm2-135m":
        _fail(f"base model {name!r} unknown; available: smollm2-135m")
    try:
        path = convert_smollm2(out)
    except (ImportError, FileNotFoundError) as e:
        _fail(str(e))
    console.print(f"SmolLM2-135M saved to {path}")


@app.command()
def refresh(config: ConfigOpt = None, overrides: SetOpt = None) -> None:
    """Re-ingest only changed raw domain files and rebuild the corpus (no-op when nothing changed)."""
    from flows.refresh import corpus_refresh

    _load(config, overrides)
    try:
        result = corpus_refresh(config=str(config) if config else None, overrides=overrides or [])
    except _user_errors() as e:
        _fail(str(e))
    print(json.dumps({"status": result["status"], "changed_domains": result["changed_domains"]}))


@app.command("notify-logs")
def notify_logs(
    path: Annotated[Path, typer.Argument(help="where the new raw files landed")],
    config: ConfigOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Emit cprec.logs.arrived to the Prefect server (PREFECT_API_URL): the refresh deployment then
    runs on this config file (the workers must see the same path)."""
    import os

    from flows.refresh import ARRIVED
    from flows.refresh import notify_logs as emit

    cfg = _load(config, overrides)
    if overrides:
        _fail("--set: the refresh reads the config file itself; put the settings in it")
    if not os.environ.get("PREFECT_API_URL"):
        _fail("PREFECT_API_URL is not set: the event needs a Prefect server (README: Orchestration)")
    emit(str(path), cfg.name, str((config or DEMO_CONFIG).resolve()))
    console.print(f"{ARRIVED} emitted for run {cfg.name} ({path})")


@app.command()
def deploy(
    prefect_yaml: Annotated[Path, typer.Option(help="deployments file")] = PROJECT_ROOT
    / "deploy"
    / "prefect.yaml",
) -> None:
    """Create the work pools and register every deployment on the Prefect server (PREFECT_API_URL)."""
    from flows.deploy import deploy_all

    deploy_all(prefect_yaml)


def main() -> None:
    """Console-script entry point."""
    from flows.cprec import embedded_runs

    try:
        with embedded_runs():
            app()
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        sys.exit(130)


if __name__ == "__main__":
    main()
