"""What sft-eval lets libraries print: progress bars on a terminal, quiet under CI, pytest capture, `-q` or pipes."""

from __future__ import annotations

import logging
import os
import sys
import warnings

_quiet = False


def interactive() -> bool:
    """A person is watching: stderr is a terminal, this is not a CI run and nobody asked for quiet (`-q`)."""
    return not _quiet and sys.stderr.isatty() and not os.environ.get("CI")


def configure_libraries(*, quiet: bool = False) -> None:
    """Library chatter (deprecation notes, 'Setting pad_token_id') is not evidence; bars only for a person."""
    global _quiet
    _quiet = _quiet or quiet
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    # e.g. "`gradient_checkpointing` is deprecated": the lesson's recipe key, still passed through as written
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    if not interactive():
        import datasets
        import transformers

        datasets.disable_progress_bars()
        transformers.utils.logging.disable_progress_bar()
