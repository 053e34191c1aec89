"""Config: defaults load, unknown keys and out-of-range values fail with the key's path."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cprec_core.config import ConfigError, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("name", ["demo.yaml", "amazon2023.yaml", "realdata.yaml", "realdata-smol.yaml"])
def test_shipped_configs_load(name: str) -> None:
    path = CONFIGS / name
    if not path.exists():
        pytest.skip(f"{name} not written yet")
    cfg = load_config(path)
    assert not set(cfg.domains.pretrain) & set(cfg.domains.downstream)


def test_unknown_key_is_named(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("corpus:\n  mix_ratoi: 0.3\n")
    with pytest.raises(ConfigError, match=r"c.yaml: corpus.mix_ratoi: unknown key"):
        load_config(f)


def test_out_of_range_value_names_key_and_value() -> None:
    with pytest.raises(ConfigError, match=r"corpus.mix_ratio: .*less than or equal to 1, got 1.5"):
        load_config(None, ["corpus.mix_ratio=1.5"])


def test_literal_choices_named() -> None:
    with pytest.raises(ConfigError, match=r"cpt.schedule.kind: .*'wsa'.*got 'linear'"):
        load_config(None, ["cpt.schedule.kind=linear"])


def test_overrides_parse_yaml_values_and_list_indexes() -> None:
    cfg = load_config(CONFIGS / "demo.yaml", ["corpus.mix_ratio=0.25", "ingest.sources.0.path=/data/x"])
    assert cfg.corpus.mix_ratio == 0.25
    assert cfg.ingest.sources[0].path == Path("/data/x")
    with pytest.raises(ConfigError, match="not an index"):
        load_config(CONFIGS / "demo.yaml", ["ingest.sources.5.path=/x"])


def test_domain_names_with_path_or_sql_characters_rejected() -> None:
    for bad in ["../etc", "Books; DROP TABLE x", "a/b", ""]:
        with pytest.raises(ConfigError, match="domains.pretrain"):
            load_config(None, [f"domains.pretrain=['{bad}']"])


def test_pretrain_and_downstream_must_be_disjoint() -> None:
    with pytest.raises(ConfigError, match="both pretrain and downstream"):
        load_config(None, ["domains.pretrain=[Books]", "domains.downstream=[Books]"])


def test_window_overlap_below_window() -> None:
    with pytest.raises(ConfigError, match="window_overlap=20 must be < corpus.max_items=20"):
        load_config(None, ["corpus.window_overlap=20"])


def test_section_fingerprint_changes_with_values() -> None:
    a = load_config(None).corpus.fingerprint()
    b = load_config(None, ["corpus.mix_ratio=0.1"]).corpus.fingerprint()
    assert a != b and a == load_config(None).corpus.fingerprint()


def test_extends_merges_sections_under_the_file_and_refuses_cycles(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(
        "name: base\ncorpus: {mix_ratio: 0.3, max_items: 12}\nevaluate: {seeds: [0, 1]}\n"
    )
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nname: child\ncorpus: {mix_ratio: 0.7}\n")
    cfg = load_config(tmp_path / "child.yaml", ["evaluate.seeds=[5]"])
    assert cfg.name == "child"
    assert (cfg.corpus.mix_ratio, cfg.corpus.max_items) == (0.7, 12)  # merged key by key
    assert cfg.evaluate.seeds == [5]
    (tmp_path / "loop.yaml").write_text("extends: loop.yaml\n")
    with pytest.raises(ConfigError, match="extends itself"):
        load_config(tmp_path / "loop.yaml")
    (tmp_path / "missing.yaml").write_text("extends: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="nowhere.yaml does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_a_flow_parameter_mapping_takes_overrides_too() -> None:
    from flows.cprec import resolve_config

    mapping = load_config(None, ["name=m"]).model_dump(mode="json")
    cfg = resolve_config(mapping, ["corpus.mix_ratio=0", "name=arm"])
    assert (cfg.name, cfg.corpus.mix_ratio) == ("arm", 0.0)
    assert mapping["name"] == "m" and mapping["corpus"]["mix_ratio"] != 0  # the caller's mapping is untouched
    assert resolve_config(cfg, ["name=again"]).name == "again"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["finetune.variants=[cpt-top]", "finetune.train_top_layers=5"],
            "train_top_layers=5 exceeds the base model's 2",
        ),
        (["finetune.item_pooling=item_token"], "item_pooling=item_token needs a trained item LLM"),
        (["finetune.user_model=llm", "finetune.variants=[sasrec]"], "user_model=llm needs an LLM variant"),
        (["finetune.variants=[cpt-huge]"], "variant 'cpt-huge': expected one of"),
        (["finetune.select={momentum: [1]}"], "finetune.select.momentum: not selectable"),
        (
            ["finetune.select={lr: [0.01, 0]}"],
            "finetune.select.lr: candidate 0: Input should be greater than 0",
        ),
    ],
)
def test_finetune_rules_fail_at_load_with_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, ["model.tiny.num_layers=2", *overrides])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["synth.n_themes=20", "synth.n_items_per_domain=10"],
            "defaults: synth.n_items_per_domain=10 must be >= synth.n_themes=20",
        ),
        (["synth.domains=[Books, Books]"], "defaults: synth.domains=['Books', 'Books']: must be non-empty"),
        (["synth.domains=[]"], "defaults: synth.domains=[]: must be non-empty"),
        (
            ["finetune.hidden_size=30", "finetune.num_heads=4"],
            "defaults: finetune.hidden_size=30 must be divisible by finetune.num_heads=4",
        ),
        (
            ["model.tiny.hidden_size=36", "model.tiny.num_heads=4"],
            "defaults: model.tiny.hidden_size=36 must be a multiple of 2 x model.tiny.num_heads=4",
        ),
        (
            ["cpt.launcher.num_nodes=2", "cpt.launcher.node_rank=2"],
            "defaults: cpt.launcher.node_rank=2 must be < cpt.launcher.num_nodes=2",
        ),
    ],
)
def test_cross_key_rules_fail_at_load_naming_the_keys(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, overrides)


def test_every_select_choice_is_validated_at_load_as_the_stage_applies_it() -> None:
    grid = "finetune.select={train_top_layers: [1, 5], lr: [0.001, 0.01]}"
    with pytest.raises(ConfigError) as err:
        load_config(None, ["model.tiny.num_layers=2", "finetune.variants=[cpt-top, sasrec]", grid])
    assert str(err.value) == (
        "defaults: finetune.select.train_top_layers=5 (variant cpt-top): finetune.train_top_layers=5 "
        "exceeds the base model's 2 layers"
    )
    # full and lora train every block: train_top_layers is no choice of theirs, so it cannot fail
    assert load_config(None, ["model.tiny.num_layers=2", "finetune.variants=[cpt-full]", grid])


def test_a_select_choice_is_its_variants_own() -> None:
    """item_token is a choice of cpt-top even beside a cpt-frozen (which never gets it); the run
    config of that choice has it, the rest of the config as it was."""
    cfg = load_config(
        None,
        [
            "finetune.variants=[cpt-top, cpt-frozen]",
            "recommend.variant=cpt-frozen",
            "finetune.variant_seeds={cpt-frozen: [0]}",
            "finetune.select={item_pooling: [mean, item_token], lr: [1]}",
        ],
    )
    run = cfg.with_choice("cpt-top", {"item_pooling": "item_token", "lr": 1})
    assert (run.finetune.item_pooling, run.finetune.lr) == ("item_token", 1.0)
    assert run.finetune.model_dump(exclude={"item_pooling", "lr"}) == cfg.finetune.model_dump(
        exclude={"item_pooling", "lr"}
    )
    assert run.recommend == cfg.recommend and cfg.with_choice("cpt-top", {}) is cfg


def test_a_config_may_mix_encoder_modes_per_variant() -> None:
    cfg = load_config(None, ["finetune.variants=[cpt, base-top, cpt-lora]", "finetune.encoder_mode=full"])
    assert [cfg.finetune.variant_mode(v) for v in cfg.finetune.variants] == ["full", "top", "lora"]
    assert cfg.finetune.variant_mode("sasrec") is None


def test_a_gpu_pool_needs_an_absolute_run_root(tmp_path: Path) -> None:
    relative = re.escape("paths.root='var/x' is relative, but orchestration.gpu_pool is set")
    with pytest.raises(ConfigError, match=relative):
        load_config(None, ["paths.root=var/x", "orchestration.gpu_pool=cprec-gpu"])
    assert load_config(None, [f"paths.root={tmp_path}", "orchestration.gpu_pool=cprec-gpu"]).root == tmp_path
    assert load_config(None, ["paths.root=var/x"]).root == Path("var/x")  # in-process: relative is fine


def test_a_dask_cluster_needs_absolute_run_root_and_sources(tmp_path: Path) -> None:
    cluster = ["orchestration.task_runner=dask", "orchestration.dask_address=tcp://10.0.0.5:8786"]
    with pytest.raises(
        ConfigError, match=re.escape("paths.root='var/x' is relative, but orchestration.dask")
    ):
        load_config(None, ["paths.root=var/x", *cluster])
    source = "ingest.sources=[{format: generic, path: raw}]"
    with pytest.raises(ConfigError, match=re.escape("ingest.sources[0].path='raw' is relative")):
        load_config(None, [f"paths.root={tmp_path}", source, *cluster])
    local = load_config(None, ["paths.root=var/x", source, "orchestration.task_runner=dask"])
    assert local.orchestration.dask_address is None  # a LocalCluster shares this working directory


def test_pack_and_cpt_go_to_the_gpu_pool_together_finetune_alone(tmp_path: Path) -> None:
    from flows.cprec import stage_groups

    stages = ["ingest", "behaviors", "corpus", "pack", "cpt", "finetune", "evaluate"]
    pooled = load_config(None, [f"paths.root={tmp_path}", "orchestration.gpu_pool=cprec-gpu"])
    assert stage_groups(stages, pooled) == [
        ["ingest"],
        ["behaviors"],
        ["corpus"],
        ["pack", "cpt"],
        ["finetune"],
        ["evaluate"],
    ]
    assert stage_groups(stages, load_config(None, [])) == [[s] for s in stages]
    assert stage_groups(["pack", "finetune"], pooled) == [["pack"], ["finetune"]]


def test_blocks_longer_than_the_models_positions_fail_at_load(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=re.escape("pack.seq_len=1024 exceeds the base model's max_position")
    ):
        load_config(None, ["pack.seq_len=1024", "model.tiny.max_position_embeddings=512"])
    model = tmp_path / "hf"
    model.mkdir()
    (model / "config.json").write_text('{"max_position_embeddings": 128, "num_hidden_layers": 4}')
    with pytest.raises(ConfigError, match="max_position_embeddings=128"):
        load_config(None, [f"model.path={model}", "pack.seq_len=256"])
    assert load_config(None, [f"model.path={model}", "pack.seq_len=128"]).pack.seq_len == 128


def test_a_gpu_pool_child_gets_the_resolved_config_and_runs_its_stages_itself(tmp_path: Path) -> None:
    from cprec_core.artifacts import code_version
    from flows.cprec import child_parameters, resolve_config

    cfg = load_config(None, [f"paths.root={tmp_path}", "orchestration.gpu_pool=cprec-gpu", "name=x"])
    params = child_parameters(["pack", "cpt"], cfg)
    assert params["stages"] == ["pack", "cpt"] and params["overrides"] == []
    assert params["parent_code_version"] == code_version()
    child = resolve_config(params["config"], [])
    assert child.orchestration.gpu_pool is None  # it runs them: handing them on would never end
    assert (child.root, child.name) == (tmp_path, "x")


def test_a_child_on_other_code_refuses_to_start() -> None:
    from flows.cprec import CodeVersionMismatch, cprec

    with pytest.raises(
        CodeVersionMismatch, match="the parent flow run 0.0.0\\+other: deploy the same commit"
    ):
        cprec.fn(config=None, stages="ingest", parent_code_version="0.0.0+other")


def test_workers_default_to_the_cpus_this_process_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    assert load_config(None, ["orchestration.workers=3"]).orchestration.worker_count() == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 5}, raising=False)  # 2 of the host's cores
    assert load_config(None, []).orchestration.worker_count() == 2
    monkeypatch.delattr(os, "sched_getaffinity")  # macOS, Windows: the host's count
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert load_config(None, []).orchestration.worker_count() == 6
