"""The one typed configuration of cprec.

Every default lives here, each with a one-line reason. A config file (YAML) names only what it
changes; unknown keys and out-of-range values are rejected at load time with the key's dotted
path, never at step 40,000. Each stage receives only its own section.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from cprec_core.artifacts import config_hash
from cprec_core.errors import UserError

DOMAIN_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class ConfigError(UserError, ValueError):
    """A configuration problem, phrased as one line naming the key and what is allowed."""


class Section(BaseModel):
    """Base for every config section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    def fingerprint(self) -> str:
        """Stable hash of this section's values (artifacts.config_hash, the one config hasher)."""
        return config_hash(self)


def check_domain_name(name: str) -> str:
    """Domain names become directory names and SQL values: letters, digits and '_' only."""
    if not DOMAIN_NAME.fullmatch(name):
        raise ValueError(
            f"domain name {name!r}: must match {DOMAIN_NAME.pattern} (letters, digits, '_'; "
            "starts with a letter)"
        )
    return name


class PathsConfig(Section):
    root: Path = Field(Path("var/cprec"), description="run root: every artifact lives below it")


class SynthConfig(Section):
    out_dir: Path = Field(Path("var/raw/synth"), description="where `cprec synth` writes Amazon-2023 files")
    domains: list[str] = Field(
        default=["Books", "Electronics", "Home", "Sports", "Toys", "Beauty", "Grocery"],
        description="seven domains, as in the paper's pre-training set",
    )
    n_users: int = Field(2000, ge=10, description="users; each is active in a random subset of domains")
    n_items_per_domain: int = Field(300, ge=10, description="catalogue size per domain")
    n_interactions: int = Field(40_000, ge=100, description="total events across all domains")
    n_themes: int = Field(12, ge=2, le=64, description="latent cross-domain tastes shared by all domains")
    theme_stickiness: float = Field(0.7, ge=0, le=1, description="P(next item keeps the previous theme)")
    popularity_skew: float = Field(1.1, ge=0, description="Zipf exponent of item popularity in a theme")
    bad_row_fraction: float = Field(0.0, ge=0, le=0.5, description="share of deliberately broken rows")
    seed: int = 0
    chunk_rows: int = Field(50_000, ge=1000, description="rows generated per batch: bounds memory")

    _check_domains = field_validator("domains")(lambda v: [check_domain_name(d) for d in v])

    @model_validator(mode="after")
    def _generable(self) -> SynthConfig:
        if self.n_items_per_domain < self.n_themes:
            raise ValueError(
                f"synth.n_items_per_domain={self.n_items_per_domain} must be >= synth.n_themes="
                f"{self.n_themes}: every theme needs an item in every domain"
            )
        if len(set(self.domains)) != len(self.domains) or not self.domains:
            raise ValueError(f"synth.domains={self.domains}: must be non-empty and without repeats")
        return self


CanonicalField = Literal["user", "item", "timestamp", "rating", "title", "categories", "description"]
IngestFormat = Literal["amazon2023", "amazon2014", "recbole", "generic", "synthetic"]


class SourceConfig(Section):
    format: IngestFormat = Field(
        description="reader: amazon2023 | amazon2014 | recbole | generic | synthetic (the generator "
        "writes Amazon-2023 files to `path` from the `synth` section, then they are read as amazon2023)"
    )
    path: Path = Field(description="directory of raw files")
    domains: list[str] | None = Field(None, description="domains to read; None = every one found")
    rename: dict[str, str] = Field(
        default_factory=dict, description="raw dataset name -> domain, e.g. {Games-6k: Games}"
    )
    fields: dict[CanonicalField, str] = Field(
        default_factory=dict,
        description="which field of your files is which, e.g. {title: movie_title, item: movieId}; "
        "unset ones use the reader's own name, then the names other ecosystems use (ingest/common.py)",
    )

    @field_validator("domains")
    @classmethod
    def _domains(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else [check_domain_name(d) for d in v]

    @field_validator("rename")
    @classmethod
    def _rename(cls, v: dict[str, str]) -> dict[str, str]:
        return {raw: check_domain_name(d) for raw, d in v.items()}


class IngestConfig(Section):
    sources: list[SourceConfig] = Field(
        default_factory=lambda: [SourceConfig(format="amazon2023", path=Path("var/raw/synth"))],
        description="raw log locations; the demo reads the synthetic generator's output",
    )
    max_bad_fraction: float = Field(0.01, ge=0, le=1, description="fail the stage above this quarantine rate")
    min_ts: int = Field(631_152_000, description="1990-01-01: earlier timestamps are broken clocks")
    max_ts: int = Field(4_102_444_800, description="2100-01-01: later timestamps are broken clocks")
    batch_rows: int = Field(100_000, ge=1000, description="rows per streamed batch: bounds memory")
    max_id_chars: int = Field(512, ge=8, description="a longer user or item id is quarantined (a broken row)")
    max_text_chars: int = Field(
        65_536, ge=64, description="a longer title, description or category is quarantined (a dump, not text)"
    )


class DuckDBConfig(Section):
    memory_limit: str = Field("2GB", description="DuckDB spills to temp_directory beyond this")
    threads: int = Field(2, ge=1, description="this machine has 2 cores")
    temp_directory: Path | None = Field(None, description="spill dir; None = <root>/tmp/duckdb")


class BehaviorsConfig(Section):
    k_core: int = Field(5, ge=1, description="iterative k-core per domain, on users and items")
    min_title_chars: int = Field(3, ge=1, description="items with shorter titles have no usable text")
    min_sequence_len: int = Field(3, ge=3, description="leave-one-out needs train + valid + test")
    min_domain_events: int = Field(
        1, ge=1, description="a configured domain that a step leaves with fewer events fails the stage"
    )
    min_domain_users: int = Field(
        1, ge=1, description="a configured domain that a step leaves with fewer users fails the stage"
    )
    tie_break: Literal["source_order", "item_id"] = Field(
        "source_order",
        description="a user's events at the same timestamp: in the raw files' order (RecBole's stable "
        "sort, so splits match RecBole's) or by item_id",
    )
    user_fraction: dict[str, float] = Field(
        default_factory=dict,
        description="per domain, keep this share of its users (a fixed hash sample; whole histories): "
        "sizes a large downstream domain to a CPU budget; unlisted domains keep every user",
    )
    duckdb: DuckDBConfig = DuckDBConfig()

    @field_validator("user_fraction")
    @classmethod
    def _fractions(cls, v: dict[str, float]) -> dict[str, float]:
        for domain, f in v.items():
            check_domain_name(domain)
            if not 0 < f <= 1:
                raise ValueError(f"user_fraction of {domain}: {f} must be in (0, 1]")
        return v


class CorpusConfig(Section):
    max_items: int = Field(20, ge=2, description="items per document window (PAPER.md §1)")
    window_overlap: int = Field(5, ge=0, description="items shared by consecutive windows")
    mix_ratio: float = Field(0.5, ge=0, le=1, description="share of mixed documents, by characters (1:1)")
    domain_weights: dict[str, float] | Literal["proportional"] = Field(
        "proportional", description="per-domain sampling weights of domain documents"
    )
    max_title_chars: int = Field(80, ge=8, description="titles are cut to this many characters")
    probe_docs: int = Field(500, ge=0, description="held-out CPT perplexity probe documents (seeded sample)")
    shuffle_lines: bool = Field(
        False,
        description="the token-matched control: the same documents and item lines, the lines shuffled "
        "across users and documents within each domain (and within the mixed documents): the same text, "
        "no behaviour order (the probe stays unshuffled)",
    )
    max_downstream_overlap: float = Field(
        0.05,
        ge=0,
        le=1,
        description="fail when more than this share of a downstream domain's item titles also names a "
        "pretrain item: CPT would have read the unseen domain's catalogue",
    )
    seed: int = 0

    @field_validator("domain_weights")
    @classmethod
    def _weights_non_negative(cls, v: dict[str, float] | str) -> dict[str, float] | str:
        if isinstance(v, dict):
            bad = {d: w for d, w in v.items() if not 0 <= w < float("inf")}
            if bad or not sum(v.values()) > 0:
                raise ValueError(f"weights must be finite, >= 0, with a positive sum, got {v}")
        return v

    @model_validator(mode="after")
    def _overlap_below_window(self) -> CorpusConfig:
        if self.window_overlap >= self.max_items:
            raise ValueError(
                f"corpus.window_overlap={self.window_overlap} must be < corpus.max_items={self.max_items}"
            )
        return self


class DomainsConfig(Section):
    pretrain: list[str] = Field(
        default=["Books", "Electronics", "Home", "Sports", "Toys", "Beauty"],
        description="domains whose train events form the CPT corpus",
    )
    downstream: list[str] = Field(
        default=["Grocery"], description="held out of CPT; fine-tuned and evaluated per domain"
    )

    _check = field_validator("pretrain", "downstream")(lambda v: [check_domain_name(d) for d in v])

    @model_validator(mode="after")
    def _disjoint(self) -> DomainsConfig:
        both = set(self.pretrain) & set(self.downstream)
        if both:
            raise ValueError(f"domains {sorted(both)} are both pretrain and downstream: CPT would see them")
        return self


class TinyModelConfig(Section):
    vocab_size: int = Field(2048, ge=300, description="BPE vocabulary trained on the corpus")
    hidden_size: int = Field(128, ge=16)
    intermediate_size: int = Field(256, ge=16)
    num_layers: int = Field(2, ge=1)
    num_heads: int = Field(4, ge=1)
    max_position_embeddings: int = Field(512, ge=64)
    seed: int = 0
    pretrain_steps: int = Field(
        0, ge=0, description="steps of general pre-training on item lines in random order; 0 = random init"
    )
    pretrain_lr: float = Field(3e-3, gt=0, description="peak LR of that general pre-training")
    pretrain_patience: int = Field(
        0,
        ge=0,
        description="stop general pre-training after this many evaluations without a lower held-out "
        "loss and keep the best weights (a base trained to its plateau); 0 = run every step",
    )
    pretrain_eval_every: int = Field(100, ge=1, description="steps between held-out item-line evaluations")

    def head_size_error(self) -> str | None:
        """Why hidden_size does not split into num_heads heads of an even size (RoPE rotates pairs)."""
        if self.hidden_size % (2 * self.num_heads) == 0:
            return None
        return (
            f"model.tiny.hidden_size={self.hidden_size} must be a multiple of 2 x "
            f"model.tiny.num_heads={self.num_heads} (an even head size for RoPE)"
        )

    @model_validator(mode="after")
    def _heads_fit(self) -> TinyModelConfig:
        if (error := self.head_size_error()) is not None:
            raise ValueError(error)
        return self


class ModelConfig(Section):
    path: Path | None = Field(None, description="local HF dir or .gguf file; None = build the tiny model")
    tiny: TinyModelConfig = TinyModelConfig()


class PackConfig(Section):
    seq_len: int = Field(256, ge=16, description="tokens per packed block")
    batch_docs: int = Field(1000, ge=1, description="documents per tokenizer batch")
    num_proc: int = Field(2, ge=1, description="tokenizer processes (2 cores here)")


class LauncherConfig(Section):
    kind: Literal["deepspeed", "torchrun"] = Field("torchrun", description="standard launcher to use")
    num_gpus: int = Field(0, ge=0, description="GPUs per node; 0 = CPU processes")
    nproc_per_node: int = Field(1, ge=1, description="processes per node on CPU")
    num_nodes: int = Field(1, ge=1)
    node_rank: int = Field(0, ge=0)
    hostfile: Path | None = Field(None, description="DeepSpeed hostfile for multi-node runs")
    master_addr: str = "127.0.0.1"
    master_port: int = Field(29500, ge=1024, le=65535)
    pick_free_port: bool = Field(
        True, description="single-node runs use a free local port instead (parallel runs never collide)"
    )
    socket_ifname: str | None = Field(
        None, description="network interface for gloo/NCCL (GLOO_SOCKET_IFNAME); None = library default"
    )

    def node_rank_error(self) -> str | None:
        """Why node_rank names no node of the run (None when it does)."""
        if self.node_rank < self.num_nodes:
            return None
        return f"cpt.launcher.node_rank={self.node_rank} must be < cpt.launcher.num_nodes={self.num_nodes}"


ScheduleKind = Literal["wsa", "cosine", "wsd", "constant"]


class ScheduleConfig(Section):
    kind: ScheduleKind = Field("wsa", description="Warmup-Stable-Annealing (PAPER.md §3); others: ablations")
    peak_lr: float = Field(5e-4, gt=0)
    warmup_frac: float = Field(0.03, ge=0, le=0.5, description="w: PAPER.md default 0.01-0.05")
    anneal_frac: float = Field(0.15, ge=0, le=0.9, description="a: PAPER.md default 0.1-0.2")
    final_lr_ratio: float = Field(0.1, ge=0, le=1, description="final LR = ratio x peak")
    anneal_shape: Literal["cosine", "linear", "exponential"] = "cosine"

    @model_validator(mode="after")
    def _phases_fit(self) -> ScheduleConfig:
        if self.warmup_frac + self.anneal_frac > 1:
            raise ValueError(
                f"cpt.schedule.warmup_frac + anneal_frac = {self.warmup_frac + self.anneal_frac} must be <= 1"
            )
        if self.kind == "wsa" and self.anneal_shape == "exponential" and self.final_lr_ratio == 0:
            raise ValueError(
                "cpt.schedule.anneal_shape=exponential needs final_lr_ratio > 0 (geometric decay)"
            )
        return self


class CPTConfig(Section):
    zero_stage: Literal[2, 3] = Field(2, description="DeepSpeed ZeRO stage")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16 on GPU; fp32 is exact on CPU")
    micro_batch_size: int = Field(8, ge=1)
    grad_accum_steps: int = Field(1, ge=1)
    max_steps: int = Field(60, ge=1, description="optimizer steps")
    weight_decay: float = Field(0.01, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    gradient_checkpointing: bool = False
    offload_optimizer: bool = False
    offload_params: bool = False
    checkpoint_every: int = Field(20, ge=1, description="steps between resumable checkpoints")
    keep_checkpoints: int = Field(2, ge=1)
    log_every: int = Field(5, ge=1)
    probe_max_docs: int = Field(
        200, ge=0, description="held-out probe documents scored before/after; 0 = skip"
    )
    seed: int = 0
    schedule: ScheduleConfig = ScheduleConfig()
    launcher: LauncherConfig = LauncherConfig()

    @model_validator(mode="after")
    def _node_rank_in_range(self) -> CPTConfig:
        if (error := self.launcher.node_rank_error()) is not None:
            raise ValueError(error)
        return self

    @model_validator(mode="after")
    def _offload_params_needs_zero3(self) -> CPTConfig:
        if self.offload_params and self.zero_stage != 3:
            raise ValueError(
                f"cpt.offload_params=true needs cpt.zero_stage=3 (got {self.zero_stage}): only ZeRO-3 "
                "partitions parameters; set cpt.zero_stage=3 or cpt.offload_params=false"
            )
        return self


EncoderMode = Literal["frozen", "full", "lora", "top"]
ENCODER_MODES: tuple[str, ...] = ("frozen", "full", "lora", "top")
FIXED_VARIANTS = ("zero-shot", "zero-shot-base", "popularity", "sasrec")
LLM_VARIANT = re.compile(r"(cpt|base)(?:-(frozen|full|lora|top))?")
SELECTABLE = (
    "item_pooling",
    "lr",
    "llm_lr",
    "item_id_embedding",
    "train_top_layers",
    "temperature",
    "dropout",
    "loss",
)


# The keys a choice in finetune.select can change for each kind of variant (others are skipped).
SASREC_CHOICES = {"lr", "dropout"}
FROZEN_CHOICES = {"item_pooling", "lr", "item_id_embedding", "temperature", "dropout", "loss"}


def check_variant(name: str) -> str:
    """A variant is an ID/zero-shot baseline or an LLM recommender `cpt|base[-<encoder mode>]`."""
    if name not in FIXED_VARIANTS and not LLM_VARIANT.fullmatch(name):
        raise ValueError(
            f"variant {name!r}: expected one of {', '.join(FIXED_VARIANTS)}, or cpt / base with an optional "
            f"encoder mode suffix ({', '.join('-' + m for m in ENCODER_MODES)})"
        )
    return name


class LoraConfig(Section):
    r: int = Field(8, ge=1, description="adapter rank: 8 is peft's default and ample for a 0.1-1 B model")
    alpha: float = Field(16, gt=0, description="scaling alpha / r = 2, the usual LoRA choice")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the adapter input")
    target_modules: list[str] = Field(
        default=["q_proj", "k_proj", "v_proj", "o_proj"],
        min_length=1,
        description="the attention projections of Llama-family blocks (names of nn.Linear modules)",
    )


class FinetuneConfig(Section):
    encoder_mode: EncoderMode = Field(
        "frozen",
        description="how the item LLM trains (cprec_core/rec/item_llm.py): frozen = features only; "
        "full = every weight; lora = peft adapters; top = the top train_top_layers blocks over cached "
        "lower states (the CPU-feasible mode for a real LLM)",
    )
    train_top_layers: int = Field(1, ge=1, description="encoder_mode=top: blocks that train (+ final norm)")
    lora: LoraConfig = LoraConfig()
    user_model: Literal["light", "llm"] = Field(
        "light",
        description="light = a small causal transformer of width hidden_size; llm = the checkpoint's own "
        "blocks over item embeddings (HLLM's user LLM; every block trains)",
    )
    item_id_embedding: bool = Field(
        False,
        description="add a learned per-item id vector to every text item embedding (text + id). Off "
        "by default (the synthetic demo's taste is in the text); the shipped real-data configs turn it "
        "on: +42 % (base) and +30 % (cpt) valid NDCG@10 on real Scientific (RESULTS.md)",
    )
    variants: list[str] = Field(
        default=["cpt", "base", "zero-shot", "popularity", "sasrec"],
        description="what to train and rank: cpt / base = the LLM recommender on the CPT / base checkpoint "
        "in encoder_mode (cpt-top etc. name the mode), zero-shot(-base), popularity, sasrec",
    )
    domains: list[str] | None = Field(
        None,
        description="the downstream domains to fine-tune and evaluate; None = all of domains.downstream",
    )
    variant_seeds: dict[str, list[int]] = Field(
        default_factory=dict,
        description="fine-tuning seeds of a variant when not evaluate.seeds, e.g. {cpt-full: [0]} (a costly "
        "mode on fewer seeds; the report says how many each has)",
    )
    max_seq_len: int = Field(20, ge=2, description="history items the user model reads")
    hidden_size: int = Field(64, ge=8, description="user-model width")
    num_layers: int = Field(2, ge=1)
    num_heads: int = Field(2, ge=1)
    dropout: float = Field(0.2, ge=0, lt=1)
    llm_warmup: bool = Field(
        True,
        description="in the encoder modes that train the LLM, first train the recommender with the LLM held "
        "(read, not trained: the frozen mode's cost) to patience, then train the LLM too, to patience "
        "(LP-FT, Kumar et al. 2022): the LLM's costly epochs refine a trained recommender",
    )
    lr: float = Field(1e-3, gt=0, description="AdamW LR of the recommender's own weights")
    llm_lr: float = Field(
        1e-4, gt=0, description="AdamW LR of trained LLM weights: a pretrained LM takes less"
    )
    batch_size: int = Field(128, ge=1)
    loss: Literal["infonce", "softmax"] = Field(
        "infonce",
        description="the LLM recommenders' loss: InfoNCE over in-batch and num_negatives sampled items, or a "
        "softmax over the whole catalogue (SASRec's; with an LLM that trains, every step then encodes every "
        "item: a GPU's job)",
    )
    num_negatives: int = Field(64, ge=0, description="sampled negatives beside in-batch ones")
    temperature: float = Field(0.07, gt=0)
    max_epochs: int = Field(30, ge=1, description="epochs of each training phase, at most")
    llm_max_epochs: int | None = Field(
        None,
        ge=1,
        description="epochs, at most, of the phase in which the item LLM trains (None = max_epochs): a "
        "CPU budget for a real LLM's costly epochs; a run it stops at its best epoch is reported cut short",
    )
    patience: int = Field(3, ge=1, description="early stopping on valid NDCG@10")
    embed_batch_size: int = Field(64, ge=1, description="items per LLM forward (encoding and training)")
    item_pooling: Literal["layers", "mean", "last", "item_token"] = Field(
        "layers",
        description="item embedding = token-mean of every layer's states averaged over layers, the "
        "token-mean of the last layer, the final (EOS) state, or the state of a learnable item token "
        "appended to the text (HLLM; a trained encoder mode only) (cprec_core/rec/item_llm.py)",
    )
    item_max_tokens: int = Field(64, ge=4, description="tokens of item text the LLM reads (title+category)")
    select: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="design choices picked on valid NDCG@10 per (domain, variant) with the first seed, "
        f"e.g. {{item_pooling: [mean, item_token]}}; keys among {', '.join(SELECTABLE)}",
    )

    _check_variants = field_validator("variants")(lambda v: [check_variant(x) for x in v])

    def seeds_of(self, variant: str, default: list[int]) -> list[int]:
        """The fine-tuning seeds of `variant`: its own (variant_seeds) or `default` (evaluate.seeds)."""
        return self.variant_seeds.get(variant, default)

    def epoch_cap(self, llm_trains: bool) -> int:
        """Epochs a training phase may run: llm_max_epochs (if set) while the item LLM trains."""
        return (self.llm_max_epochs or self.max_epochs) if llm_trains else self.max_epochs

    def variant_mode(self, variant: str) -> str | None:
        """The encoder mode of an LLM recommender variant (None for the others)."""
        match = LLM_VARIANT.fullmatch(variant)
        return None if match is None else match.group(2) or self.encoder_mode

    @model_validator(mode="after")
    def _consistent(self) -> FinetuneConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"finetune.hidden_size={self.hidden_size} must be divisible by "
                f"finetune.num_heads={self.num_heads}"
            )
        modes = {m for m in map(self.variant_mode, self.variants) if m is not None}
        if self.item_pooling == "item_token" and "frozen" in modes:
            raise ValueError(
                "finetune.item_pooling=item_token needs a trained item LLM (encoder mode full, lora or top): "
                "a frozen LLM cannot learn the token"
            )
        if "lora" in modes and importlib.util.find_spec("peft") is None:
            raise ValueError("finetune.encoder_mode=lora needs the `peft` package: pip install peft")
        stray = sorted(set(self.variant_seeds) - set(self.variants))
        if stray or any(not seeds for seeds in self.variant_seeds.values()):
            raise ValueError(
                f"finetune.variant_seeds: {stray or 'an empty list'}: each key a variant, each a seed list"
            )
        if self.user_model == "llm" and not modes:
            raise ValueError(
                "finetune.user_model=llm needs an LLM variant (cpt or base) in finetune.variants"
            )
        for key, values in self.select.items():
            if key not in SELECTABLE:
                raise ValueError(
                    f"finetune.select.{key}: not selectable; choose among {', '.join(SELECTABLE)}"
                )
            if not isinstance(values, list) or not values:
                raise ValueError(f"finetune.select.{key}: expected a non-empty list of candidate values")
            field = FinetuneConfig.model_fields[key]
            check = TypeAdapter(
                Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation
            )
            for v in values:
                try:
                    check.validate_python(v)
                except ValidationError as e:
                    raise ValueError(
                        f"finetune.select.{key}: candidate {v!r}: {e.errors()[0]['msg']}"
                    ) from None
        return self

    def candidates(self) -> list[dict[str, Any]]:
        """Every combination of the `select` grid as finetune overrides ([{}] when none)."""
        keys = list(self.select)
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*self.select.values())]


def choices_for(cfg: Config, variant: str) -> list[dict[str, Any]]:
    """The distinct finetune.select candidates that can change `variant` ([{}] when none can)."""
    ft = cfg.finetune
    mode = ft.variant_mode(variant)
    if variant == "sasrec":
        allowed = SASREC_CHOICES
    elif mode == "frozen":
        allowed = FROZEN_CHOICES
    elif mode is not None:
        allowed = set(ft.select)
    else:
        return [{}]  # nothing to train: popularity, zero-shot
    out: list[dict[str, Any]] = []
    for cand in ft.candidates():
        kept = {k: v for k, v in cand.items() if k in allowed}
        if mode in ("full", "lora"):
            kept.pop("train_top_layers", None)
        if mode == "frozen" and kept.get("item_pooling") == "item_token":
            continue  # a frozen LLM cannot learn the item token
        if kept not in out:
            out.append(kept)
    return out or [{}]


class EvaluateConfig(Section):
    seeds: list[int] = Field(default=[0, 1, 2], min_length=1, description=">= 3 seeds (PAPER.md §6)")
    ks: list[int] = Field(default=[5, 10, 20, 50], min_length=1)
    test: Literal["wilcoxon", "ttest"] = "wilcoxon"
    alpha: float = Field(0.05, gt=0, lt=1)


class RecommendConfig(Section):
    variant: str = Field(
        "best",
        description="the fine-tuned variant to serve; best = the highest mean valid NDCG@10 (never test)",
    )
    top_k: int = Field(10, ge=1, le=1000, description="items recommended per user")

    @field_validator("variant")
    @classmethod
    def _variant(cls, v: str) -> str:
        return v if v == "best" else check_variant(v)


class ExperimentConfig(Section):
    arms: list[Literal["shuffled", "domain-only", "cosine"]] = Field(
        default=["shuffled", "domain-only", "cosine"],
        description="the arms beside main: the token-matched control, Claim 2's and Claim 3's ablations",
    )
    cpt_seeds: list[int] = Field(
        default=[0],
        min_length=1,
        description="CPT runs per experiment arm: >= 3 say something about CPT as a method",
    )
    arm_variants: list[str] = Field(
        default=["cpt"],
        min_length=1,
        description="the cpt variants each ablation arm fine-tunes (a cost knob)",
    )
    costly_variants: list[str] = Field(
        default_factory=list,
        description="main-arm cpt variants (e.g. cpt-full) that run only at costly_seeds, their base twins "
        "only at those fine-tuning seeds: an LLM-training mode on a CPU budget",
    )
    costly_seeds: list[int] = Field(default=[0], min_length=1, description="the seeds costly_variants run at")


class OrchestrationConfig(Section):
    refresh_cron: str = Field("0 * * * *", description="corpus-refresh schedule")
    gpu_pool: str | None = Field(None, description="work pool for cpt/finetune; None = run in-process")
    result_storage: str | None = Field(
        None, description="a saved Prefect storage block slug, e.g. 's3-bucket/cprec'; None = run root"
    )
    task_runner: Literal["threads", "dask"] = Field(
        "threads",
        description="how ingest's per-domain tasks run: threads of the flow's process, or a Dask "
        "cluster (prefect-dask; behaviors' per-domain builds too): the one at dask_address, else a "
        "LocalCluster of `workers` processes. The run root must be on storage every Dask worker mounts",
    )
    workers: int | None = Field(
        None,
        ge=1,
        description="threads, or LocalCluster worker processes, for those tasks; None = this machine's CPUs",
    )
    dask_address: str | None = Field(
        None, description="scheduler address of an existing Dask cluster, e.g. tcp://10.0.0.5:8786"
    )

    def worker_count(self) -> int:
        """`workers`, or the CPUs this process may use when it is not set (its affinity, not the
        host's count: a container pinned to 2 of 64 cores gets 2)."""
        if self.workers:
            return self.workers
        if hasattr(os, "sched_getaffinity"):  # Linux; macOS and Windows have only the host's count
            return len(os.sched_getaffinity(0))
        return os.cpu_count() or 1


def base_model_setting(model: ModelConfig, key: str) -> int | None:
    """An HF config setting of the configured base LLM (num_hidden_layers, max_position_embeddings):
    the tiny model's own, or config.json of a local HF directory; None when it cannot be read
    without loading weights (a .gguf, a missing path)."""
    if model.path is None:
        return {"num_hidden_layers": model.tiny.num_layers}.get(key, getattr(model.tiny, key, None))
    config_json = Path(model.path) / "config.json"
    if not config_json.is_file():
        return None
    value = json.loads(config_json.read_text()).get(key)
    return int(value) if isinstance(value, int) else None


class Config(Section):
    """The whole configuration. Sections map one-to-one to pipeline stages."""

    name: str = Field("demo", description="run name: reports/<name>/, models/cpt/<name>/")

    @field_validator("name")
    @classmethod
    def _name_is_one_path_segment(cls, v: str) -> str:
        if not RUN_NAME.fullmatch(v) or ".." in v:
            raise ValueError(f"run name {v!r}: letters, digits, '_', '.', '-' only (it names directories)")
        return v

    paths: PathsConfig = PathsConfig()
    synth: SynthConfig = SynthConfig()
    ingest: IngestConfig = IngestConfig()
    domains: DomainsConfig = DomainsConfig()
    behaviors: BehaviorsConfig = BehaviorsConfig()
    corpus: CorpusConfig = CorpusConfig()
    model: ModelConfig = ModelConfig()
    pack: PackConfig = PackConfig()
    cpt: CPTConfig = CPTConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    recommend: RecommendConfig = RecommendConfig()
    experiment: ExperimentConfig = ExperimentConfig()
    orchestration: OrchestrationConfig = OrchestrationConfig()

    @model_validator(mode="after")
    def _top_layers_fit_the_model(self) -> Config:
        ft = self.finetune
        if "top" not in map(ft.variant_mode, ft.variants):
            return self
        layers = base_model_setting(self.model, "num_hidden_layers")
        if layers is not None and ft.train_top_layers > layers:
            raise ValueError(
                f"finetune.train_top_layers={ft.train_top_layers} exceeds the base model's {layers} layers"
            )
        return self

    @model_validator(mode="after")
    def _select_choices_are_valid(self) -> Config:
        """Every choice the finetune stage will try (choices_for), applied as it applies it
        (with_choice), passes every rule: a bad one fails here, naming its select key and value."""
        for variant in self.finetune.variants:
            for choice in choices_for(self, variant):
                if self._choice_error(variant, choice) is None:
                    continue
                one = [{k: v} for k, v in choice.items() if self._choice_error(variant, {k: v})]
                culprit = one[0] if one else choice  # else only the combination is invalid
                named = ", ".join(f"finetune.select.{k}={v!r}" for k, v in culprit.items())
                raise ValueError(f"{named} (variant {variant}): {self._choice_error(variant, culprit)}")
        return self

    def _choice_error(self, variant: str, choice: dict[str, Any]) -> str | None:
        try:
            self.with_choice(variant, choice)
        except ValidationError as e:
            return e.errors()[0]["msg"].removeprefix("Value error, ")
        return None

    def with_choice(self, variant: str, choice: dict[str, Any]) -> Config:
        """This config as the run of `variant` with the finetune.select `choice` sees it: the choice
        validated by every rule in a copy whose finetune.variants is that one LLM variant (its choice
        is its own: item_token on cpt-top beside a cpt-frozen; the copy serves nothing), then applied."""
        if not choice:
            return self
        ft = self.finetune
        alone = {"variants": [variant], "variant_seeds": {}} if ft.variant_mode(variant) else {}
        scratch = Config.model_validate(
            {**dict(self), "finetune": {**ft.model_dump(), **choice, **alone, "select": {}}, "recommend": {}}
        )
        chosen = {k: getattr(scratch.finetune, k) for k in choice}
        return self.model_copy(update={"finetune": ft.model_copy(update=chosen)})

    @model_validator(mode="after")
    def _blocks_fit_the_models_positions(self) -> Config:
        positions = base_model_setting(self.model, "max_position_embeddings")
        if positions is not None and self.pack.seq_len > positions:
            raise ValueError(
                f"pack.seq_len={self.pack.seq_len} exceeds the base model's max_position_embeddings="
                f"{positions}; lower pack.seq_len"
            )
        return self

    @model_validator(mode="after")
    def _served_variant_is_trained(self) -> Config:
        variant = self.recommend.variant
        if variant != "best" and variant not in self.finetune.variants:
            raise ValueError(
                f"recommend.variant={variant!r} is not in finetune.variants {self.finetune.variants}"
            )
        return self

    @model_validator(mode="after")
    def _finetune_domains_are_downstream(self) -> Config:
        extra = sorted(set(self.finetune.domains or []) - set(self.domains.downstream))
        if extra:
            raise ValueError(f"finetune.domains {extra}: not in domains.downstream {self.domains.downstream}")
        return self

    @model_validator(mode="after")
    def _gpu_pool_needs_shared_paths(self) -> Config:
        if not self.orchestration.gpu_pool:
            return self
        for key, path in (("paths.root", self.paths.root), ("model.path", self.model.path)):
            if path is not None and not Path(path).is_absolute():
                raise ValueError(
                    f"{key}={str(path)!r} is relative, but orchestration.gpu_pool is set: a GPU node "
                    "would resolve it against its own working directory; give an absolute path on the "
                    "volume every node shares"
                )
        return self

    @model_validator(mode="after")
    def _dask_cluster_needs_shared_paths(self) -> Config:
        if self.orchestration.task_runner != "dask" or not self.orchestration.dask_address:
            return self
        paths = [("paths.root", self.paths.root)]
        paths += [(f"ingest.sources[{i}].path", s.path) for i, s in enumerate(self.ingest.sources)]
        for key, path in paths:
            if not Path(path).is_absolute():
                raise ValueError(
                    f"{key}={str(path)!r} is relative, but orchestration.dask_address is set: a Dask "
                    "worker would resolve it against its own working directory; give an absolute path "
                    "that every worker mounts"
                )
        return self

    @property
    def root(self) -> Path:
        return self.paths.root

    @property
    def eval_domains(self) -> list[str]:
        """The downstream domains the finetune and evaluate stages work on."""
        return [
            d for d in self.domains.downstream if self.finetune.domains is None or d in self.finetune.domains
        ]

    @property
    def all_domains(self) -> list[str]:
        return [*self.domains.pretrain, *self.domains.downstream]


def _format_error(err: ValidationError, origin: str) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "<root>"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "value_error" and (key == "<root>" or msg.startswith(f"{key}.")):
        more = f" (+{len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
        return f"{origin}: {msg}{more}"  # a cross-key rule: its message names the keys itself
    if first["type"] == "extra_forbidden":
        msg = "unknown key (see cprec_core/config.py for the allowed keys)"
    elif "input" in first and not isinstance(first["input"], dict):
        msg = f"{msg}, got {first['input']!r}"
    more = f" (+{len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{origin}: {key}: {msg}{more}"


def parse_override(item: str) -> tuple[list[str], Any]:
    """Parse one `--set a.b.c=value` override; the value is read as YAML (numbers, lists, null)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. corpus.mix_ratio=0.3")
    key, raw = item.split("=", 1)
    return key.strip().split("."), yaml.safe_load(raw)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply dotted-key overrides to a raw config mapping (before validation).

    A numeric key indexes a list: `ingest.sources.0.path=/data` changes the first source.
    """
    for item in overrides:
        keys, value = parse_override(item)
        node: Any = data
        for depth, k in enumerate(keys):
            last = depth == len(keys) - 1
            if isinstance(node, list):
                if not k.isdigit() or int(k) >= len(node):
                    raise ConfigError(f"--set {item!r}: {k} is not an index of a {len(node)}-item list")
                if last:
                    node[int(k)] = value
                else:
                    node = node[int(k)]
            elif isinstance(node, dict):
                if last:
                    node[k] = value
                else:
                    node = node.setdefault(k, {})
            else:
                raise ConfigError(f"--set {item!r}: {keys[depth - 1]} is a value, not a section")
    return data


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """`top` over `base`: mappings merge key by key, anything else (lists too) is replaced."""
    out = dict(base)
    for k, v in top.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_config_file(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML config file as a mapping, with its `extends: other.yaml` (relative to the file) merged
    underneath it, recursively."""
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: extends itself through {' -> '.join(map(str, seen))}")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    parent = loaded.pop("extends", None)
    if parent is None:
        return loaded
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: extends: expected a file name, got {parent!r}")
    return deep_merge(read_config_file(path.parent / parent, (*seen, path.resolve())), loaded)


def load_config(path: Path | str | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the defaults when path is None), apply overrides, validate.

    A file may start from another with `extends: base.yaml` (see read_config_file). Relative
    paths inside the file are taken as relative to the current directory, as a user typing a
    command expects.
    """
    data: dict[str, Any] = {}
    origin = "defaults"
    if path is not None:
        origin = str(path)
        data = read_config_file(Path(path))
    data = apply_overrides(data, overrides or [])
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_error(e, origin)) from None


def config_from_dict(data: dict[str, Any], origin: str = "config") -> Config:
    """Validate a mapping (e.g. a Prefect flow parameter) into a Config."""
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_error(e, origin)) from None
