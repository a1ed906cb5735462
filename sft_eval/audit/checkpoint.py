"""Checkpoint checks: does the model's vocabulary match the tokenizer's, and are the rows the chat template's
special tokens need trained at all?

Only the safetensors headers and the embedding tensors are read (never the whole model, never a pickle): a 7B
checkpoint is audited in the time it takes to read its embedding matrix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from sft_eval.audit import CheckId, Finding, guarded
from sft_eval.audit.template import end_of_turn_id
from sft_eval.chat import special_literals
from sft_eval.models import open_safetensors, weight_files

_INPUT_EMBEDDING = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight", "embed_in.weight")
_OUTPUT_EMBEDDING = ("lm_head.weight", "embed_out.weight")
# A row whose norm is this far below the median row's was never updated in pretraining (Llama-3 base ships its
# chat tokens' rows at ~0): a model starting from it cannot emit that token until training moves the row.
UNTRAINED_NORM_RATIO = 0.05


@dataclass(frozen=True)
class Embedding:
    file: Path
    name: str
    rows: int


def embeddings(folder: str | Path) -> dict[str, Embedding]:
    """The input (`"input"`) and untied output (`"output"`) embedding tensors of a safetensors checkpoint, from
    its headers only; empty for a folder without safetensors weights."""
    located = weight_files(folder)
    found = {}
    for role, suffixes in (("input", _INPUT_EMBEDDING), ("output", _OUTPUT_EMBEDDING)):
        name = next((n for n in sorted(located) if n.endswith(suffixes)), None)
        if name is not None:
            with open_safetensors(located[name]) as handle:
                found[role] = Embedding(located[name], name, handle.get_slice(name).get_shape()[0])
    return found


def template_token_ids(tokenizer: PreTrainedTokenizerBase, *, pad: bool = True) -> dict[str, int]:
    """The special tokens the chat template writes and the tokenizer's eos/bos (and pad), by string."""
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else ""
    tokens = [*special_literals(template), tokenizer.eos_token, tokenizer.bos_token]
    tokens += [tokenizer.pad_token] if pad else []
    ids = {}
    for token in dict.fromkeys(t for t in tokens if t):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
            ids[token] = token_id
    return ids


def check_vocab(tokenizer: PreTrainedTokenizerBase, rows: int) -> list[Finding]:
    """The embedding must have a row for every token id, and not vastly more rows than the tokenizer has tokens
    (the model then generates ids the tokenizer cannot decode: blank answers that score as clean)."""
    size = len(tokenizer)
    beyond = {t: i for t, i in template_token_ids(tokenizer).items() if i >= rows}
    if size > rows or beyond:
        return [
            Finding(
                CheckId.CHECKPOINT_VOCAB,
                "error",
                f"the model's embedding has {rows:,} rows but the tokenizer has {size:,} tokens: ids from {rows:,} "
                "on have no row, and training or generation fails or reads another token's row",
                f"template tokens beyond the embedding: {beyond}" if beyond else f"tokenizer size {size:,}",
            )
        ]
    if rows - size > max(1024, size // 10):  # real checkpoints pad a few hundred rows for speed; not thousands
        return [
            Finding(
                CheckId.CHECKPOINT_VOCAB,
                "warning",
                f"the model's embedding has {rows:,} rows for a tokenizer of {size:,} tokens: they are not "
                "made for each other, and the model can generate ids the tokenizer cannot decode (blank answers)",
                f"{rows - size:,} rows no token maps to",
            )
        ]
    return []


def row_norms(embedding: Embedding, chunk: int = 8192) -> torch.Tensor:
    """Every row's L2 norm, read in chunks (a 7B model's embedding is a gigabyte)."""
    norms = []
    with open_safetensors(embedding.file) as handle:
        tensor = handle.get_slice(embedding.name)
        for start in range(0, embedding.rows, chunk):
            norms.append(tensor[start : start + chunk].float().norm(dim=1))
    return torch.cat(norms)


def check_untrained_tokens(tokenizer: PreTrainedTokenizerBase, tensors: dict[str, Embedding]) -> list[Finding]:
    """The template's special tokens (end-of-turn above all) must have trained rows in the base model's input and
    output embeddings. Full fine-tuning can still move an untrained row; a run that freezes the embeddings (LoRA
    without them in `modules_to_save` or `trainable_token_indices`) cannot, and the model never learns to stop."""
    findings = []
    needed = template_token_ids(tokenizer, pad=False)  # a pad row is zero by design (nn.Embedding's padding_idx)
    for role, embedding in tensors.items():
        norms = row_norms(embedding)
        median = float(norms.median())
        weak = {t: float(norms[i]) for t, i in needed.items() if i < embedding.rows}
        weak = {t: n for t, n in weak.items() if n < UNTRAINED_NORM_RATIO * median}
        if weak:
            listed = ", ".join(f"{t!r} (norm {n:.2g})" for t, n in weak.items())
            findings.append(
                Finding(
                    CheckId.CHECKPOINT_UNTRAINED_TOKENS,
                    "warning",
                    f"the {role} embedding rows of {listed} are untrained (below {UNTRAINED_NORM_RATIO:.0%} of the "
                    f"median row norm {median:.2g}): full fine-tuning must move them; a LoRA run that freezes the "
                    "embeddings never learns to write them, and a model that cannot write its end-of-turn token "
                    "never stops",
                    f"{embedding.name} in {embedding.file.name}",
                )
            )
    return findings


def audit_checkpoint(tokenizer: PreTrainedTokenizerBase, folder: str | Path) -> list[Finding]:
    """The checkpoint checks on a model folder (nothing for a folder without safetensors weights)."""
    tensors = embeddings(folder) if Path(folder).is_dir() else {}
    if "input" not in tensors:
        return []
    return guarded(CheckId.CHECKPOINT_VOCAB, lambda: check_vocab(tokenizer, tensors["input"].rows)) + guarded(
        CheckId.CHECKPOINT_UNTRAINED_TOKENS, lambda: check_untrained_tokens(tokenizer, tensors)
    )


# -- the tuned checkpoint's contract with whoever serves it ---------------------------------------------------
# Files a saved tokenizer keeps its chat template in; transformers 5 writes chat_template.jinja, older loaders (and
# servers pinned to them) read only tokenizer_config.json's `chat_template`.
TEMPLATE_FILES = ("tokenizer_config.json", "chat_template.jinja", "chat_template.json")


def read_json(path: Path) -> dict:
    """A checkpoint's JSON file as a dict ({} when absent); a file that does not parse raises, which `guarded`
    turns into that check's finding."""
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path.name} holds a {type(data).__name__}, not an object")
    return data


def saved_templates(folder: Path) -> dict[str, str]:
    """The default chat template each file of a saved tokenizer carries, by file name."""
    found = {}
    for name in TEMPLATE_FILES:
        path = folder / name
        if not path.is_file():
            continue
        if name.endswith(".jinja"):
            found[name] = path.read_text(encoding="utf-8")
            continue
        template = read_json(path).get("chat_template")
        if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}, ...]
            template = next((t.get("template") for t in template if t.get("name") == "default"), None)
        if isinstance(template, str):
            found[name] = template
    return found


def check_saved_template(trained: str | None, folder: Path) -> list[Finding]:
    """The tuned folder carries the chat template training rendered with: a server renders prompts with the
    saved one (or its own default when there is none)."""
    saved = saved_templates(folder)
    if not trained:
        return []
    if not saved:
        return [
            Finding(
                CheckId.CHECKPOINT_TEMPLATE,
                "error",
                "the checkpoint saves no chat template: a server falls back to its default and renders other "
                "prompts than training did; save the tokenizer training used into the folder "
                "(tokenizer.save_pretrained)",
                f"looked in {', '.join(TEMPLATE_FILES)} of {folder}",
            )
        ]
    differ = {name: text for name, text in saved.items() if text.strip() != trained.strip()}
    if differ:
        name, text = next(iter(differ.items()))
        at = next(
            (i for i, (a, b) in enumerate(zip(text, trained, strict=False)) if a != b), min(len(text), len(trained))
        )
        return [
            Finding(
                CheckId.CHECKPOINT_TEMPLATE,
                "error",
                f"the chat template saved in {name} is not the one training used: served prompts differ from the "
                "trained ones",
                f"first difference at character {at}: saved {text[at : at + 40]!r}, training {trained[at : at + 40]!r}",
            )
        ]
    if "tokenizer_config.json" not in saved:
        return [
            Finding(
                CheckId.CHECKPOINT_TEMPLATE,
                "info",
                f"the chat template is saved only in {', '.join(saved)}: loaders that read tokenizer_config.json's "
                "`chat_template` alone (older transformers, servers pinned to one) see no template",
                str(folder),
            )
        ]
    return []


def check_saved_stop_ids(
    tokenizer: PreTrainedTokenizerBase, end_of_turn: int | None, folder: Path, *, configs: Path | None = None
) -> list[Finding]:
    """The end-of-turn token the template writes is a stop id of the saved checkpoint: `generation_config.json`'s
    `eos_token_id` (config.json's without one; both read from `configs`, default `folder`) or the saved
    tokenizer's eos, which vLLM also stops at."""
    if end_of_turn is None:
        return []  # the template writes none: template.stop_token says so
    configs = configs or folder
    generation = read_json(configs / "generation_config.json")
    source = generation if "eos_token_id" in generation else read_json(configs / "config.json")
    configured = source.get("eos_token_id")
    ids = set(configured if isinstance(configured, list) else [] if configured is None else [configured])
    eos = read_json(folder / "tokenizer_config.json").get("eos_token")
    eos = eos.get("content") if isinstance(eos, dict) else eos
    if isinstance(eos, str) and tokenizer.convert_tokens_to_ids(eos) is not None:
        ids.add(tokenizer.convert_tokens_to_ids(eos))
    if end_of_turn in ids:
        return []
    name = tokenizer.convert_ids_to_tokens(end_of_turn)
    return [
        Finding(
            CheckId.CHECKPOINT_EOS,
            "error",
            f"the saved checkpoint does not stop at {name!r} (id {end_of_turn}), the token that ends an assistant "
            "turn: model.generate and vLLM run on to max_new_tokens; add it to generation_config.json's "
            "eos_token_id",
            f"generation_config/config eos_token_id {configured!r}; saved tokenizer eos {eos!r}",
        )
    ]


def check_use_cache(folder: Path) -> list[Finding]:
    """`use_cache: false` in config.json: transformers 5's Trainer writes `TrainingArguments.use_cache` (False by
    default) into the model's config, and every checkpoint it saves keeps it."""
    config = read_json(folder / "config.json")
    sections = [config, *(v for v in config.values() if isinstance(v, dict) and "use_cache" in v)]
    if all(section.get("use_cache", True) is not False for section in sections):
        return []
    return [
        Finding(
            CheckId.CHECKPOINT_USE_CACHE,
            "warning",
            "config.json says use_cache: false: code that reads the model's defaults recomputes every earlier "
            "token at each generated one (slow serving); set use_cache=True in SFTConfig/TrainingArguments or "
            "model.config.use_cache = True before saving",
            "config.json: use_cache false",
        )
    ]


def check_sampling_defaults(folder: Path) -> list[Finding]:
    """Sampling in `generation_config.json`: `generate()` without arguments samples, and vLLM and TGI take the
    file's temperature/top_p/top_k as their defaults, so a "greedy" evaluation that reads defaults is random."""
    generation = read_json(folder / "generation_config.json")
    sampling = {k: generation[k] for k in ("do_sample", "temperature", "top_p", "top_k") if k in generation}
    neutral = {"do_sample": False, "temperature": 1.0, "top_p": 1.0, "top_k": 50}
    if all(v is None or v == neutral[k] for k, v in sampling.items()):
        return []
    return [
        Finding(
            CheckId.CHECKPOINT_SAMPLING,
            "warning",
            "generation_config.json samples by default: a greedy evaluation that reads the checkpoint's defaults "
            "(generate() without arguments, vLLM, TGI) gives other answers each run; drop the sampling keys or "
            "set do_sample false",
            ", ".join(f"{k}={v!r}" for k, v in sampling.items()),
        )
    ]


def audit_tuned_checkpoint(
    tokenizer: PreTrainedTokenizerBase, folder: str | Path, *, config_folder: str | Path | None = None
) -> list[Finding]:
    """The tuned checkpoint's files against what training used (`tokenizer`, its template, the end-of-turn token
    it writes): what a server reads from the folder. JSON and the template files only; no weights. A LoRA
    adapter folder carries the tokenizer (and its template) but not the model's config and generation config:
    those come from `config_folder`, the base the adapter is applied to."""
    folder = Path(folder)
    configs = Path(config_folder) if config_folder is not None else folder
    return (
        guarded(CheckId.CHECKPOINT_TEMPLATE, lambda: check_saved_template(tokenizer.chat_template, folder))
        + guarded(
            CheckId.CHECKPOINT_EOS,
            lambda: check_saved_stop_ids(tokenizer, end_of_turn_id(tokenizer), folder, configs=configs),
        )
        + guarded(CheckId.CHECKPOINT_USE_CACHE, lambda: check_use_cache(configs))
        + guarded(CheckId.CHECKPOINT_SAMPLING, lambda: check_sampling_defaults(configs))
    )
