"""PEFT adapters (LoRA) as the tuned model: read, held against `model.base`, applied to it, and summarised.

An adapter folder (`adapter_config.json` + `adapter_model.safetensors`, as `PeftModel.save_pretrained` and a LoRA
run's `Trainer` checkpoints write it) is the tuned model of a LoRA run: `model.base` with the adapter applied. Its
config and tensor shapes are read as JSON and safetensors headers before any weight is loaded, so an adapter made
for another base is one line, not a size-mismatch traceback deep inside PEFT.
"""

from __future__ import annotations

import math
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sft_eval.errors import SftEvalError
from sft_eval.models import ADAPTER_CONFIG, load_json, load_model, tensor_shapes

# Key prefix PeftModel.save_pretrained writes before a module's own name (PeftModelForCausalLM -> LoraModel).
_PREFIX = "base_model.model."
# Tensor-name suffixes of an adapter file and, for each, which dimension of the base weight it must match:
# LoRA's A reads the layer's input (in_features: base dim 1), B writes its output (out_features: base dim 0);
# for an embedding, A spans the rows (base dim 0) and B the width (dim 1); a modules_to_save copy is the whole
# weight; trainable tokens hold whole rows (the width, dim 1).
_LORA_PARTS = {
    ".lora_A.weight": (1, 1),
    ".lora_B.weight": (0, 0),
    ".lora_embedding_A": (1, 0),
    ".lora_embedding_B": (0, 1),
    ".token_adapter.trainable_tokens_delta": (1, 1),
}


def read_adapter_config(folder: Path, key: str = "model.tuned") -> dict[str, Any]:
    """`adapter_config.json` as plain data; not JSON, or not a LoRA adapter for a causal LM, is one line."""
    path = folder / ADAPTER_CONFIG
    config = load_json(path, key)
    if not isinstance(config, dict):
        raise SftEvalError(f"{key}: {path}: not a PEFT adapter config (a JSON object)")
    if config.get("peft_type") != "LORA":
        raise SftEvalError(f"{key}: {path}: peft_type {config.get('peft_type')!r}: sft-eval reads LoRA adapters only")
    return config


def recorded_base(adapter: Path, base_spec: str, base_dir: Path) -> str | None:
    """The hub id an adapter records as its base (`base_model_name_or_path`) where `model.base` (spelled
    `base_spec`, found at `base_dir`) is a local folder that does not name it (not a hub cache snapshot of it,
    `models--org--name`): the adapter is applied to a folder nothing ties to the model it was trained on. None where
    they agree or cannot be told apart (a hub id against a hub id is `adapter_mismatch`'s)."""
    recorded = read_adapter_config(adapter).get("base_model_name_or_path")
    if not (isinstance(recorded, str) and _looks_like_hub_id(recorded)) or _looks_like_hub_id(base_spec):
        return None
    if "models--" + recorded.replace("/", "--") in Path(base_dir).expanduser().resolve().parts:
        return None
    return recorded


def _looks_like_hub_id(name: str) -> bool:
    return name.count("/") == 1 and not name.startswith((".", "/", "~")) and not Path(name).exists()


def adapter_mismatch(adapter: Path, base: Path, base_spec: str) -> str | None:
    """How the adapter does not fit `model.base` (the folder `base`, spelled `base_spec` in the recipe), or None:
    a recorded base model that is another hub id, or tensors whose shapes are not those of the base's modules
    (safetensors headers only: nothing is loaded)."""
    config = read_adapter_config(adapter)
    recorded = config.get("base_model_name_or_path")
    hub_ids = isinstance(recorded, str) and _looks_like_hub_id(recorded) and _looks_like_hub_id(base_spec)
    if hub_ids and recorded != base_spec:
        return f"it was trained on {recorded!r} (base_model_name_or_path), not {base_spec!r}"
    adapter_shapes = tensor_shapes(adapter)
    uncovered = _uncovered_modules(config.get("target_modules"), adapter_shapes)
    if uncovered:
        named = ", ".join(uncovered[:3]) + (", ..." if len(uncovered) > 3 else "")
        return (
            f"{ADAPTER_CONFIG}'s target_modules {config.get('target_modules')!r} do not cover {len(uncovered)} "
            f"module(s) its weights adapt ({named}): PEFT would apply only part of the adapter"
        )
    base_shapes = tensor_shapes(base)
    if not base_shapes:
        return None  # a base without safetensors weights: PEFT's loader says what it finds
    tied = not any(n.endswith("lm_head.weight") for n in base_shapes)  # a tied head is not saved: the embedding
    input_embedding = next((n for n in base_shapes if n.endswith("embed_tokens.weight")), None)
    for name, shape in sorted(adapter_shapes.items()):
        # save_embedding_layers=True writes the (resized) base embedding under the LoRA layer's `base_layer`
        module = name.removeprefix(_PREFIX).replace(".base_layer.", ".")
        part = next((p for p in _LORA_PARTS if module.endswith(p)), None)
        target = module.removesuffix(part) if part else module.removesuffix(".weight")
        if part is None and not module.endswith(".weight"):
            continue  # a bias or another tensor of a modules_to_save copy: its weight's check covers the module
        wanted = base_shapes.get(f"{target}.weight")
        if wanted is None and tied and target.endswith("lm_head") and input_embedding:
            wanted = base_shapes[input_embedding]  # tied: lm_head is the input embedding
        if wanted is None:
            return f"it adapts {target}, which model.base does not have ({name})"
        if part is None:
            if tuple(shape) != tuple(wanted):
                return f"{name} is {list(shape)}, model.base's {target}.weight is {list(wanted)}"
            continue
        mine, theirs = _LORA_PARTS[part]
        if shape[mine] != wanted[theirs]:
            return f"{name} is {list(shape)}, which does not fit model.base's {target}.weight {list(wanted)}"
    return None


def _uncovered_modules(targets: Any, shapes: Mapping[str, Any]) -> list[str]:
    """The modules the adapter's LoRA weights adapt that `target_modules` does not name, matched as PEFT matches
    them (a list: the module's name or its dotted suffix; a string: a full regex match; "all-linear": any)."""
    modules = sorted(
        {
            name.removeprefix(_PREFIX).split(".lora_")[0]
            for name in shapes
            if ".lora_A." in name or ".lora_B." in name or ".lora_embedding_" in name
        }
    )
    if targets is None or targets == "all-linear":
        return []
    if isinstance(targets, str):
        return [m for m in modules if not re.fullmatch(targets, m)]
    if isinstance(targets, list | tuple | set):
        names = [str(t) for t in targets]
        return [m for m in modules if not any(m == t or m.endswith(f".{t}") for t in names)]
    return []


def load_adapted_model(base: Path, adapter: Path, device: str = "auto", *, key: str = "model.tuned") -> Any:
    """`model.base` with the adapter applied (`peft.PeftModel.from_pretrained`), in eval mode: the tuned model of a
    LoRA run, unmerged (what was trained)."""
    from peft import PeftModel

    model = load_model(base, device, key="model.base")
    try:
        adapted = PeftModel.from_pretrained(model, str(adapter), is_trainable=False)
    except Exception as exc:  # PEFT raises many types for an adapter that does not load; all are one line
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SftEvalError(f"{key}: cannot apply the adapter {adapter} to model.base: {reason}") from None
    return adapted.eval()


def merged_model(base: Path, adapter: Path, device: str = "auto", merged: Path | None = None) -> tuple[Any, str]:
    """The model a LoRA run serves, and where it came from: the merged folder the recipe names (`model.merged`),
    else the adapter merged into the base as users do it (`merge_and_unload`, `save_pretrained`, loaded back), so
    what saving a merge loses (tied or resized embeddings) is lost here too."""
    if merged is not None:
        return load_model(merged, device, key="model.merged"), f"model.merged {merged}"
    folded = load_adapted_model(base, adapter, device).merge_and_unload()
    with tempfile.TemporaryDirectory() as folder:
        folded.save_pretrained(folder)
        del folded
        return load_model(folder, device, key="model.tuned"), "merge_and_unload, saved and loaded back"


def lora_summary(config: Mapping[str, Any], trainable: int, parameters: int) -> dict[str, Any]:
    """What the report says of a LoRA run: rank, alpha, the adapted modules, what else trains, and how many
    parameters train of all of them."""
    targets = config.get("target_modules")
    return {
        "method": "LoRA",
        "r": config.get("r"),
        "lora_alpha": config.get("lora_alpha"),
        "target_modules": sorted(targets) if isinstance(targets, (list, set, tuple)) else targets,
        # PEFT adds the full name of a module it ties to one named here (model.embed_tokens): said once, by its name
        "modules_to_save": sorted({name.rsplit(".", 1)[-1] for name in config.get("modules_to_save") or []}),
        "trainable_token_indices": config.get("trainable_token_indices"),
        "ensure_weight_tying": bool(config.get("ensure_weight_tying")),
        "trainable_parameters": int(trainable),
        "parameters": int(parameters),
    }


def adapter_summary(adapter: Path, base: Path | None) -> dict[str, Any]:
    """`lora_summary` of an adapter folder: its config, the parameters its file holds (all of them trained) and
    those of the base (when given), counted from the safetensors headers."""

    def count(folder: Path) -> int:
        return sum(math.prod(shape) for shape in tensor_shapes(folder).values())

    trainable = count(adapter)
    return lora_summary(read_adapter_config(adapter), trainable, (count(base) if base else 0) + trainable)


def trained_summary(model: Any) -> dict[str, Any] | None:
    """`lora_summary` of a PeftModel a run just trained (its resolved config and parameter counts); None for a
    model without an adapter (full fine-tuning)."""
    configs = getattr(model, "peft_config", None)
    if not configs:
        return None
    config = configs[getattr(model, "active_adapter", "default")]
    trainable, parameters = model.get_nb_trainable_parameters()
    return lora_summary(config.to_dict(), trainable, parameters)
