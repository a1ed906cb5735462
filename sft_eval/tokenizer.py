"""The embedded tokenizer: byte-level BPE trained here on the shipped text, chat tokens registered as special.

eos is the template's end-of-turn token (`<|im_end|>` for ChatML), so a tuned model stops where a turn
ends; the pad token is distinct from eos, so padding can never mask the token the model must learn to emit.
Documents in pretraining are separated by `<|endoftext|>`, which is not eos: the base model never sees an
end-of-turn token and so cannot stop like a chat model (that is what SFT must teach it).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from sft_eval.errors import SftEvalError
from sft_eval.hub import require_local_or_reachable

DOCUMENT_SEPARATOR = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
VOCAB_SIZE = 1024
# Files any transformers tokenizer folder has at least one of.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")


def train_tokenizer(
    texts: Iterable[str], chat_template: str, special_tokens: list[str], eos_token: str
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts` and wrap it as a transformers tokenizer with the chat template."""
    specials = list(dict.fromkeys([DOCUMENT_SEPARATOR, PAD_TOKEN, *special_tokens]))
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token=eos_token,
        pad_token=PAD_TOKEN,
        bos_token=None,
        unk_token=None,
        additional_special_tokens=[t for t in specials if t not in (eos_token, PAD_TOKEN)],
        chat_template=chat_template,
        padding_side="left",
        model_max_length=512,
    )


def load_tokenizer(path: str | Path, *, key: str = "model.tokenizer") -> PreTrainedTokenizerBase:
    """A tokenizer from a local folder (or the hub when reachable); failure is one line naming the folder."""
    require_local_or_reachable(str(path), key=key, kind="tokenizer")
    folder = Path(path).expanduser()
    if folder.is_dir() and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        hint = "set `model.tokenizer` to a tokenizer folder" if key == "model.base" else "point it at a tokenizer"
        raise SftEvalError(f"{key}: {folder} has no tokenizer ({' or '.join(TOKENIZER_FILES[:2])}); {hint}")
    try:
        return AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:  # transformers raises many types here; all mean "this folder is not a tokenizer"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SftEvalError(f"{key}: cannot load a tokenizer from {path}: {reason}") from None
