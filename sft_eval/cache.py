"""Content-addressed fixture cache: trained tokenizers and models, kept on disk between sessions.

An entry's key hashes everything that decides its content (the recipe, the data files it names, the library
versions). An entry is built in a temporary folder, sealed with a manifest of every file's size and sha256,
and renamed into place; an entry whose files do not match its manifest (truncated, half-written, edited) is
deleted and rebuilt, never loaded. A file lock per entry makes concurrent pytest-xdist workers build it once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from sft_eval.errors import SftEvalError

MANIFEST = "MANIFEST.json"
_LIBRARIES = ("torch", "transformers", "trl", "tokenizers", "datasets")
_OPTIONAL_LIBRARIES = ("peft",)  # keyed when installed: LoRA runs and adapters depend on it


def default_cache_dir() -> Path:
    return Path(os.environ.get("SFT_EVAL_CACHE") or Path.home() / ".cache" / "sft-eval").expanduser()


def library_versions() -> dict[str, str]:
    from sft_eval import __version__

    optional = {}
    for name in _OPTIONAL_LIBRARIES:
        try:
            optional[name] = version(name)
        except PackageNotFoundError:
            continue
    return {**{name: version(name) for name in _LIBRARIES}, **optional, "sft-eval": __version__}


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def source_digest(source: str) -> str:
    """Digest of a data or model source: a file's content, a folder's files, or a hub id as is."""
    path = Path(source)
    if path.is_file():
        return file_digest(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        listing = [(str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
        return hashlib.sha256(json.dumps(listing).encode()).hexdigest()
    return hashlib.sha256(source.encode()).hexdigest()


def cpu_kernels() -> dict[str, str]:
    """The machine architecture and the CPU kernel set torch dispatches to (AVX512, AVX2, DEFAULT when forced with
    `ATEN_CPU_CAPABILITY`, ...): trained weights differ between them, so a cache shared between machines (or
    built under a forced kernel set) never serves one's weights to the other."""
    import torch

    return {"machine": platform.machine().lower(), "kernels": torch.backends.cpu.get_cpu_capability()}


def cache_key(stage: str, inputs: dict[str, Any]) -> str:
    """Hash of a stage's inputs, the library versions and the CPU kernel set that turn them into files."""
    payload = {"stage": stage, "inputs": inputs, "versions": library_versions(), "cpu": cpu_kernels()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]


class NotBuilt(SftEvalError):
    """An entry a cache that may not build (`FixtureCache(builds=False)`) does not hold: `entry` is its folder."""

    def __init__(self, entry: Path):
        super().__init__(f"fixture cache {entry.parent}: no {entry.name} entry")
        self.entry = entry


class FixtureCache:
    """`builds=False`: a cache that only finds entries and raises `NotBuilt` for a missing one. A process that runs
    inside a process group (torchrun's ranks) opens it so: building takes an entry's lock, and a build that trains
    joins the group's collectives, so one rank holding the lock waits for a rank that waits for the lock."""

    def __init__(self, root: str | Path | None = None, *, builds: bool = True):
        self.root = Path(root).expanduser() if root else default_cache_dir()
        self.builds = builds

    def path(self, stage: str, key: str) -> Path:
        return self.root / f"{stage}-{key}"

    @property
    def answers(self) -> AnswerCache:
        """The answer cache beside the fixtures (`--sft-cache` holds both)."""
        return AnswerCache(self.root)

    def get_or_build(self, stage: str, key: str, build: Callable[[Path], None]) -> Path:
        """The sealed entry for (stage, key), built by `build(folder)` first if it is missing or damaged."""
        final = self.path(stage, key)
        if is_sealed(final):
            return final
        if not self.builds:
            raise NotBuilt(final)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SftEvalError(f"fixture cache {self.root}: cannot create it ({exc.strerror or exc})") from None
        lock = Path(str(final) + ".lock")
        held = FileLock(str(lock), timeout=lock_timeout_s())
        try:
            held.acquire()
        except Timeout:
            raise SftEvalError(
                f"fixture cache {final}: still locked after {lock_timeout_s():.0f} s by {_owner(lock)}; wait for it "
                f"to finish, or remove {lock} if that process is gone (limit: $SFT_EVAL_LOCK_TIMEOUT_S)"
            ) from None
        except OSError as exc:
            raise SftEvalError(f"fixture cache {self.root}: not writable ({exc.strerror or exc})") from None
        try:
            _note_owner(lock)
            if is_sealed(final):  # another process built it while we waited
                return final
            return self._build(final, build)
        finally:
            held.release()

    def _build(self, final: Path, build: Callable[[Path], None]) -> Path:
        """Build (stage, key) under its lock: first collect what killed builders of it left behind."""
        for stale in self.root.glob(f".{final.name}.building-*"):  # we hold the lock: nobody else is building it
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():
            shutil.rmtree(final)
        staging = Path(tempfile.mkdtemp(dir=self.root, prefix=f".{final.name}.building-"))
        try:
            build(staging)
            seal(staging)
            os.replace(staging, final)
        finally:
            if staging.exists():
                shutil.rmtree(staging)
        return final


def lock_timeout_s() -> float:
    """How long to wait for another process building the same entry (an hour: a big model's build is long)."""
    return float(os.environ.get("SFT_EVAL_LOCK_TIMEOUT_S", "3600"))


def _note_owner(lock: Path) -> None:
    """Say who holds `lock`, for the message of a process that times out waiting for it."""
    with contextlib.suppress(OSError):
        Path(str(lock) + ".owner").write_text(f"pid {os.getpid()} on {platform.node()}", encoding="utf-8")


def _owner(lock: Path) -> str:
    try:
        return Path(str(lock) + ".owner").read_text(encoding="utf-8").strip() or "another process"
    except OSError:
        return "another process"


class AnswerCache:
    """Generated answers on disk, one JSON file per answer under `<cache>/answers/`, named by a key of everything
    that determines it (`Pipeline.answers` builds the key). A file is written whole or not at all (`write_atomic`):
    a run killed mid-write (SIGKILL included) leaves at most a hidden staging file no reader opens, and workers
    (pytest-xdist) that write the same answer at once each replace the file with identical content. No locks."""

    def __init__(self, root: Path):
        self.folder = root / "answers"

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The answer stored under `key`, or None (absent, or a file that is not one: it is regenerated)."""
        try:
            data = json.loads(self.path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def put(self, key: str, answer: dict[str, Any]) -> None:
        path = self.path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, json.dumps(answer))
        except OSError as exc:
            raise SftEvalError(f"answer cache {self.folder}: cannot write ({exc.strerror or exc})") from None


def write_atomic(path: Path, text: str) -> Path:
    """Write `text` to `path` whole or not at all: readers (another worker, a later run) never see a torn file."""
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes it 0600; an output file gets the mode `open` would give it
    os.replace(tmp, path)
    return path


def _read_umask() -> int:
    """This process's umask, read once at import (setting it is the only portable way to read it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def seal(folder: Path) -> None:
    """Write the manifest last: its presence means every listed file was completely written."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    manifest = {str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": file_digest(p)} for p in files}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")


def is_sealed(folder: Path) -> bool:
    """Whether every file of the entry's manifest is present with its recorded size and sha256."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    for name, meta in manifest.items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != meta["size"] or file_digest(path) != meta["sha256"]:
            return False
    return bool(manifest)


def writable_folder(folder: str | Path, *, key: str, create: bool = True) -> Path:
    """`folder`, created and proven writable (a file is written there and removed), or one `SftEvalError` naming
    `key`: called before any model work, so a bad output folder costs one line and no generation. `create=False`
    only checks that it could be (pytest start-up, which writes nothing unless a test evaluates)."""
    out = Path(folder).expanduser()
    if out.exists() and not out.is_dir():
        raise SftEvalError(f"{key}: {out} is a file, not a folder for the report")
    if not create:
        existing = next(p for p in (out.absolute(), *out.absolute().parents) if p.exists())
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise SftEvalError(f"{key}: cannot write the report into {out}: {existing} is not a writable folder")
        return out
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise SftEvalError(f"{key}: cannot write the report into {out}: {exc.strerror or exc}") from None
    return out
