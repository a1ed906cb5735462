"""Models: the tiny base model built and pretrained here, and loading of local or hub checkpoints.

The tiny base is a real base model in the lesson's sense: a Llama-architecture decoder (about 1 M
parameters) pretrained on plain prose, so it continues text but has never seen a chat turn or the
end-of-turn token. SFT is what must teach it to answer and to stop.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors import safe_open
from transformers import (
    AutoModelForCausalLM,
    DataCollatorForLanguageModeling,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_callback import PrinterCallback

from sft_eval.chat import load_template
from sft_eval.console import interactive
from sft_eval.errors import SftEvalError
from sft_eval.hub import require_local_or_reachable
from sft_eval.tokenizer import DOCUMENT_SEPARATOR, load_tokenizer

# The lesson's fallback template (fixtures/templates/lesson_fallback.jinja, as the lesson wrote it), installed
# when a tokenizer has none; load_model_and_tokenizer reports it, and `sft-eval audit` shows what is wrong with it.
LESSON_FALLBACK_TEMPLATE = load_template("lesson_fallback")

PRETRAIN_BLOCK = 64
PRETRAIN_EPOCHS = 20
PRETRAIN_LR = 3e-3


def resolve_device(device: str = "auto", *, flag: str = "--device") -> torch.device:
    """`auto` is the GPU when there is one, else the CPU; anything else is tried as a torch device (`flag` names
    the option it came from in the error)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
        torch.empty(1, device=resolved)  # tried, not just parsed: `cuda` on a machine without one fails here
    except (RuntimeError, AssertionError) as exc:
        reason = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else type(exc).__name__
        raise SftEvalError(f"{flag} {device!r} cannot be used here: {reason}") from None
    return resolved


def tiny_config(tokenizer: PreTrainedTokenizerBase) -> LlamaConfig:
    """A Llama-architecture decoder small enough to pretrain and fine-tune on two CPU cores in seconds."""
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


# The lesson's small model, SmolLM2-135M, as a Llama config: its shape, for random-weight stand-ins offline.
SMOLLM2_135M = {
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "vocab_size": 49152,
    "max_position_embeddings": 8192,
    "rope_theta": 100000.0,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True,
}


def save_random_checkpoint(
    folder: str | Path, tokenizer: PreTrainedTokenizerBase | None, *, seed: int = 0, **config: Any
) -> Path:
    """A random-weight Llama checkpoint of the given shape, with `tokenizer` saved beside it (None: weights only):
    a hub model's architecture on disk, built offline, for trying a recipe before the real weights are at hand."""
    set_seed(seed)
    ids = {} if tokenizer is None else {"eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    model = LlamaForCausalLM(LlamaConfig(**{"bos_token_id": None, **ids, **config}))
    model.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return Path(folder)


def pretrain_base(
    tokenizer: PreTrainedTokenizerBase, documents: list[str], seed: int, device: str | torch.device = "cpu"
) -> PreTrainedModel:
    """Build the tiny model and pretrain it as a causal LM on plain prose (transformers' Trainer) on `device`."""
    set_seed(seed)
    model = LlamaForCausalLM(tiny_config(tokenizer))
    ids: list[int] = []
    for doc in documents:
        ids += tokenizer(doc + DOCUMENT_SEPARATOR, add_special_tokens=False)["input_ids"]
    blocks = [ids[i : i + PRETRAIN_BLOCK] for i in range(0, len(ids) - PRETRAIN_BLOCK + 1, PRETRAIN_BLOCK)]
    dataset = [{"input_ids": block} for block in blocks]
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            num_train_epochs=PRETRAIN_EPOCHS,
            per_device_train_batch_size=16,
            learning_rate=PRETRAIN_LR,
            lr_scheduler_type="cosine",
            warmup_steps=10,
            weight_decay=0.01,
            seed=seed,
            logging_strategy="no",
            save_strategy="no",
            report_to=[],
            use_cpu=torch.device(device).type == "cpu",
            disable_tqdm=not interactive(),
        )
        collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
        trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator)
        trainer.remove_callback(PrinterCallback)  # nothing is logged but the final metrics dict
        trainer.train()
    # Served like the lesson serves it: generation stops only at the tokenizer's eos (the end-of-turn token),
    # which pretraining never showed the base; so the base runs to max_new_tokens, as a real base model does.
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    # Trainer wrote TrainingArguments.use_cache (off) into the config; a base is served with its KV cache (a LoRA
    # adapter on it is served with this config: checkpoint.use_cache)
    model.config.use_cache = True
    return model.eval()


def perplexity(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, text: str) -> float:
    """Perplexity of `text` under `model`: how well a base model continues prose."""
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"].to(model.device)
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss
    return math.exp(loss.item())


def load_model(path: str | Path, device: str = "auto", *, key: str = "model.base") -> PreTrainedModel:
    """Any `AutoModelForCausalLM` checkpoint from a folder (or the hub when reachable), in eval mode."""
    require_local_or_reachable(str(path), key=key, kind="model")
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype="auto")
    except Exception as exc:  # transformers raises many types here; all mean "not a loadable checkpoint"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SftEvalError(f"{key}: cannot load a model from {path}: {reason}") from None
    return model.to(resolve_device(device)).eval()  # type: ignore[arg-type]  # torch's Module.to takes a device


def generation_eos_ids(folder: str) -> list[int] | None:
    """`generation_config.eos_token_id` of a checkpoint folder, read without loading weights; None if absent."""
    path = Path(folder) / "generation_config.json"
    if not path.is_file():
        return None
    eos = GenerationConfig.from_pretrained(folder).eos_token_id
    return None if eos is None else [eos] if isinstance(eos, int) else list(eos)


class LoadedModel(NamedTuple):
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    changes: list[str]  # what had to be changed to make it usable; empty when nothing was


def load_model_and_tokenizer(name_or_path: str, device: str = "auto") -> LoadedModel:
    """The lesson's loader, without its silent fixes: whatever it changes is returned in `changes`.

    Like the lesson it installs a fallback chat template when there is none and sets pad = eos when there
    is no pad token, so the model can be asked questions at all; unlike the lesson it says so, because both
    are what breaks SFT later (`template.*` and `tokenizer.pad` audits explain why).
    """
    tokenizer = load_tokenizer(name_or_path, key="model")
    model = load_model(name_or_path, device, key="model")
    changes = []
    if not tokenizer.chat_template:
        tokenizer.chat_template = LESSON_FALLBACK_TEMPLATE
        changes.append("no chat template: installed the lesson's fallback template (System:/User:/Assistant:)")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
        changes.append(f"no pad token: set pad_token = eos_token ({tokenizer.eos_token!r})")
    if tokenizer.padding_side != "left":
        tokenizer.padding_side = "left"
        changes.append("padding side was right: set to left for batched generation")
    return LoadedModel(model, tokenizer, changes)


def describe(model: PreTrainedModel) -> dict[str, Any]:
    return {"architecture": type(model).__name__, "parameters": model.num_parameters()}


# -- a run trained elsewhere ---------------------------------------------------------------------------------
SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")
TRAINER_STATE = "trainer_state.json"
ADAPTER_CONFIG = "adapter_config.json"  # a PEFT adapter folder (LoRA): applied to model.base
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PICKLED_ADAPTER = "adapter_model.bin"
# config.json keys that fix a decoder's shapes: a fine-tuned checkpoint has its base's
ARCHITECTURE_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")


class FinishedRun(NamedTuple):
    """Where a run trained elsewhere keeps its parts: the weights to load, and the trainer's record."""

    weights: Path  # config.json + safetensors weights (+ the tokenizer and generation config it was saved with)
    state: Path | None  # trainer_state.json: the folder's own, else its latest checkpoint's; None when absent
    output_dir: Path  # where the trainer wrote (the named folder, or the checkpoint's parent): SftEvalRecorder files
    adapter: bool = False  # `weights` is a PEFT adapter folder, applied to model.base


CHECKPOINT_NAME = re.compile(r"checkpoint-([0-9]+)", re.ASCII)  # ASCII digits: `checkpoint-²` is no step


def checkpoint_folders(folder: Path) -> list[Path]:
    """`checkpoint-<step>` folders of a Trainer output folder, by step (as `Trainer` numbers them); a name whose
    step is not plain ASCII digits (`checkpoint-abc`, `checkpoint-²`) is not a checkpoint."""
    steps = {p: CHECKPOINT_NAME.fullmatch(p.name) for p in folder.glob("checkpoint-*") if p.is_dir()}
    found = {p: int(m.group(1)) for p, m in steps.items() if m}
    return sorted(found, key=found.__getitem__)


def has_weights(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any((folder / name).is_file() for name in SAFE_WEIGHTS)


def load_json(path: Path, key: str) -> Any:
    """A JSON file of a run's folder as plain data; not JSON (with its line), or unreadable, is one line naming
    `key` and the file."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SftEvalError(f"{key}: {path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SftEvalError(f"{key}: {path}: cannot be read: {exc}") from None


def has_adapter(folder: Path) -> bool:
    """A PEFT adapter folder (`save_pretrained` of a PeftModel, or a LoRA run's checkpoint)."""
    return (folder / ADAPTER_CONFIG).is_file()


def finished_run(path: str | Path, *, key: str = "model.tuned") -> FinishedRun:
    """Resolve a Trainer/SFTTrainer output folder or one of its `checkpoint-N` folders: the weights are the
    folder's own (`trainer.save_model`) or else its latest checkpoint's, full weights or a PEFT adapter
    (`adapter_config.json`, applied to `model.base`); the record is the folder's `trainer_state.json`
    (`trainer.save_state`) or else the latest checkpoint's. Only safetensors are read: pickled weights and
    `training_args.bin` are never unpickled (loading a pickle runs code from the folder)."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise SftEvalError(f"{key}: {path} is not a folder (a Trainer output folder or a checkpoint-N folder)")
    checkpoints = checkpoint_folders(folder)

    def loadable(p: Path) -> bool:
        return has_weights(p) or has_adapter(p)

    weights = folder if loadable(folder) else next((p for p in reversed(checkpoints) if loadable(p)), None)
    adapter = weights is not None and has_adapter(weights) and not has_weights(weights)  # full weights win
    if adapter and weights is not None and not (weights / ADAPTER_WEIGHTS).is_file():
        pickled = weights / PICKLED_ADAPTER
        if pickled.is_file():
            raise SftEvalError(
                f"{key}: {pickled} holds pickled adapter weights and no {ADAPTER_WEIGHTS}; sft-eval never unpickles a "
                "file from a run's folder (a pickle runs code): save it with save_pretrained (safetensors)"
            )
        raise SftEvalError(
            f"{key}: {weights} holds a PEFT adapter config ({ADAPTER_CONFIG}) but no {ADAPTER_WEIGHTS}, the adapter's "
            "weights"
        )
    if weights is None:
        pickles = [p / n for p in (folder, *checkpoints[-1:]) for n in PICKLED_WEIGHTS if (p / n).is_file()]
        if pickles:
            raise SftEvalError(
                f"{key}: {pickles[0]} holds pickled weights and no model.safetensors; sft-eval never unpickles a "
                "file from a run's folder (a pickle runs code): save it with save_pretrained (safetensors)"
            )
        raise SftEvalError(
            f"{key}: {path} is neither a checkpoint (config.json + model.safetensors, or a PEFT adapter's "
            f"{ADAPTER_CONFIG} + {ADAPTER_WEIGHTS}) nor a Trainer output folder with checkpoint-N folders holding one"
        )
    state: Path | None = folder / TRAINER_STATE
    if state is not None and not state.is_file():
        state = next((p / TRAINER_STATE for p in reversed(checkpoints) if (p / TRAINER_STATE).is_file()), None)
    # weights from one checkpoint, the record from a later one that kept no weights: not the same model. (The
    # folder's own final weights with its last checkpoint's record are: Trainer saves a checkpoint at the end.)
    if weights != folder and state is not None and state.parent not in (weights, folder):
        raise SftEvalError(
            f"{key}: {path}: the latest record is {state.parent.name}'s but its weights are {weights.name}'s "
            f"({state.parent.name} has none): that record is not of those weights; name the checkpoint to judge "
            f'(model.tuned = "{weights}"), whose record is its own'
        )
    _check_record_step(weights, state, key)
    output_dir = folder.parent if folder.name.startswith("checkpoint-") and not checkpoints else folder
    return FinishedRun(weights, state, output_dir, adapter=adapter)


def _check_record_step(weights: Path, state: Path | None, key: str) -> None:
    """Weights in `checkpoint-N` are those of step N: a record (`trainer_state.json`) whose `global_step` is
    another step describes other weights (a run folder's own step-8 record beside checkpoint-6's weights, once
    the later weights were deleted). A record that cannot be read is left to the record's own reader."""
    match = CHECKPOINT_NAME.fullmatch(weights.name)
    if match is None or state is None:
        return
    try:
        recorded = json.loads(state.read_text(encoding="utf-8")).get("global_step")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return
    if isinstance(recorded, int) and not isinstance(recorded, bool) and recorded != int(match.group(1)):
        raise SftEvalError(
            f"{key}: the weights are {weights}'s (step {match.group(1)}) but the record {state} is of step "
            f"{recorded}: that record is not of those weights; name the checkpoint to judge "
            f'(model.tuned = "{weights}"), whose record is its own'
        )


@contextlib.contextmanager
def open_safetensors(file: Path) -> Iterator[Any]:
    """`safetensors.safe_open` on a file from a user's folder: a truncated or garbled header (the file is checked
    against its header's offsets when opened) is one line naming the file, not a SafetensorError traceback."""
    try:
        handle = safe_open(file, framework="pt")
    except Exception as exc:  # SafetensorError, OSError: anything that stops the header from being read
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise SftEvalError(
            f"{file}: not a readable safetensors file (truncated or not safetensors): {reason}"
        ) from None
    with handle:
        yield handle


def weight_files(folder: str | Path) -> dict[str, Path]:
    """Each tensor name of a safetensors checkpoint and the file holding it (from the index or the one file's
    header); empty for a folder without safetensors weights."""
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return {name: folder / file for name, file in weight_map.items()}
    single = next((folder / n for n in ("model.safetensors", ADAPTER_WEIGHTS) if (folder / n).is_file()), None)
    if single is None:
        return {}
    with open_safetensors(single) as handle:
        return dict.fromkeys(handle.keys(), single)


def tensor_shapes(folder: str | Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape in a safetensors checkpoint or adapter folder, from the file headers only."""
    shapes = {}
    by_file: dict[Path, list[str]] = {}
    for name, file in weight_files(folder).items():
        by_file.setdefault(file, []).append(name)
    for file, names in by_file.items():
        with open_safetensors(file) as handle:
            shapes.update({name: tuple(handle.get_slice(name).get_shape()) for name in names})
    return shapes


def same_weights(tuned: Path, base: Path, *, sample: int = 1 << 20) -> bool:
    """Whether two checkpoint folders hold the same weights: the same folder, or weight files of the same names
    and sizes whose first and last `sample` bytes agree (a fine-tune changes nearly every byte; hashing whole
    multi-GB files would cost seconds on every command)."""
    if tuned.resolve() == base.resolve():
        return True
    names = [n for n in SAFE_WEIGHTS[:1] if (tuned / n).is_file() and (base / n).is_file()]
    if not names:
        names = sorted(p.name for p in tuned.glob("*.safetensors") if (base / p.name).is_file())
    if not names:
        return False
    for name in names:
        a, b = tuned / name, base / name
        if a.stat().st_size != b.stat().st_size:
            return False
        with a.open("rb") as fa, b.open("rb") as fb:
            if fa.read(sample) != fb.read(sample):
                return False
            end = max(0, a.stat().st_size - sample)
            fa.seek(end)
            fb.seek(end)
            if fa.read() != fb.read():
                return False
    return True


def architecture_mismatch(tuned: Path, base: Path) -> str | None:
    """How the tuned checkpoint's config.json differs from the base's in the keys that fix its shapes; None when
    it does not (read as JSON, no weights)."""
    configs = []
    for folder in (tuned, base):
        try:
            configs.append(json.loads((folder / "config.json").read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            raise SftEvalError(f"{folder / 'config.json'}: cannot be read as JSON: {exc}") from None
    differ = [k for k in ARCHITECTURE_KEYS if configs[0].get(k) != configs[1].get(k)]
    if not differ:
        return None
    shape = ", ".join(f"{k} {configs[0].get(k)!r} (base {configs[1].get(k)!r})" for k in differ)
    return f"{shape}: this run did not start from model.base"
