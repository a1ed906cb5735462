"""The model and dataset hub: used when reachable, never waited on when it is not.

huggingface_hub retries an unreachable host for over a minute; sft-eval instead checks once, quickly, and
says in one line what is missing and which recipe key to point at a local copy.
"""

from __future__ import annotations

import functools
import socket
from pathlib import Path
from urllib.parse import urlparse

from sft_eval.errors import SftEvalError


@functools.cache
def hub_reachable(timeout: float = 3.0) -> bool:
    """One TCP connection attempt to the hub endpoint; offline mode (`HF_HUB_OFFLINE`) counts as unreachable.
    huggingface_hub says which endpoint and whether offline; only the quick connection test is ours."""
    from huggingface_hub import constants, is_offline_mode

    if is_offline_mode():
        return False
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def in_hub_cache(repo_id: str, repo_type: str = "model") -> bool:
    """Whether a hub repository was downloaded before (then it loads offline)."""
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(repo_id, repo_type=repo_type, local_files_only=True)
    except Exception:  # not cached, or not a valid repo id: either way not loadable offline
        return False
    return True


def require_local_or_reachable(name_or_path: str, *, key: str, kind: str) -> None:
    """Pass when `name_or_path` is on disk, in the hub cache, or the hub can be reached; else one clear line."""
    if Path(name_or_path).expanduser().exists():
        return
    is_repo_id = name_or_path.count("/") == 1 and not name_or_path.startswith((".", "/", "~"))
    if not is_repo_id:
        exists = "file or folder" if kind == "dataset" else "folder"
        raise SftEvalError(f"{key}: {kind} {name_or_path!r} does not exist; set `{key}` to an existing {exists}")
    repo_type = "dataset" if kind == "dataset" else "model"
    if in_hub_cache(name_or_path, repo_type) or hub_reachable():
        return
    raise SftEvalError(
        f"{key}: {kind} {name_or_path!r} is not on disk or in the hub cache and the hub is not reachable; "
        f"set `{key}` in the recipe to a local copy"
    )
