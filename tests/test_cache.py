"""The fixture cache never serves a damaged entry, and concurrent builders build once."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sft_eval.cache import MANIFEST, FixtureCache, cache_key, is_sealed
from sft_eval.pipeline import Pipeline
from sft_eval.recipe import DEFAULT_RECIPE, load_recipe


class Builder:
    """A build function that writes a 1 MiB file and counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, folder: Path) -> None:
        self.calls += 1
        (folder / "weights.bin").write_bytes(os.urandom(1 << 20))
        (folder / "sub").mkdir()
        (folder / "sub" / "config.json").write_text('{"a": 1}')


def test_entry_is_built_once_then_served(tmp_path):
    cache, build = FixtureCache(tmp_path), Builder()
    first = cache.get_or_build("stage", "k", build)
    second = cache.get_or_build("stage", "k", build)
    assert first == second and build.calls == 1 and is_sealed(first)


@pytest.mark.parametrize(
    "damage",
    [
        lambda e: (e / "weights.bin").write_bytes((e / "weights.bin").read_bytes()[:1000]),
        lambda e: (e / "sub" / "config.json").write_text('{"a": 2}'),
        lambda e: (e / "weights.bin").unlink(),
        lambda e: (e / MANIFEST).unlink(),
        lambda e: (e / MANIFEST).write_text("{not json"),
    ],
    ids=["truncated", "same-size-edit", "file-missing", "manifest-missing", "manifest-corrupt"],
)
def test_damaged_entry_is_rebuilt_not_loaded(tmp_path, damage):
    cache, build = FixtureCache(tmp_path), Builder()
    entry = cache.get_or_build("stage", "k", build)
    damage(entry)
    assert not is_sealed(entry)
    rebuilt = cache.get_or_build("stage", "k", build)
    assert build.calls == 2 and is_sealed(rebuilt)
    assert (rebuilt / "weights.bin").stat().st_size == 1 << 20


def test_a_build_that_dies_half_way_leaves_nothing_to_serve(tmp_path):
    cache = FixtureCache(tmp_path)

    def dies(folder: Path) -> None:
        (folder / "weights.bin").write_bytes(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.get_or_build("stage", "k", dies)
    assert not cache.path("stage", "k").exists()
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []
    build = Builder()
    cache.get_or_build("stage", "k", build)
    assert build.calls == 1


def test_key_changes_with_inputs():
    assert cache_key("s", {"lr": 1e-4}) != cache_key("s", {"lr": 2e-4})
    assert cache_key("s", {"lr": 1e-4}) == cache_key("s", {"lr": 1e-4})


CONCURRENT = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    import contextlib
    import sft_eval.cache
    from sft_eval.cache import FixtureCache

    if os.environ.get("BREAK_LOCK"):  # the deliberately broken case: no file lock around the build
        sft_eval.cache.FileLock = lambda path: contextlib.nullcontext()

    def build(folder):
        with open(os.environ["BUILD_LOG"], "a") as log:
            log.write(f"{os.getpid()}\\n")
        time.sleep(1.5)
        (folder / "weights.bin").write_bytes(b"x" * 1000)

    def test_get():
        entry = FixtureCache(os.environ["CACHE_DIR"]).get_or_build("tuned", "same-key", build)
        assert (entry / "weights.bin").read_bytes() == b"x" * 1000

    def test_get_again():
        test_get()
    """
)


@pytest.mark.parametrize(("break_lock", "builds"), [(False, 1), (True, 2)], ids=["locked", "lock-removed"])
def test_two_xdist_workers_build_the_same_entry_once(tmp_path, break_lock, builds, cli):
    (tmp_path / "test_concurrent.py").write_text(CONCURRENT)
    log = tmp_path / "builds.log"
    env = {**os.environ, "BUILD_LOG": str(log), "CACHE_DIR": str(tmp_path / "cache"), "BREAK_LOCK": "1" * break_lock}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "-q", "-p", "no:cacheprovider", "test_concurrent.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=cli.hang_guard_s,
    )
    if not break_lock:
        assert result.returncode == 0 and "2 passed" in result.stdout, result.stdout + result.stderr
    builders = log.read_text().split()
    assert len(builders) == builds, f"entry built by {len(builders)} processes {builders}, expected {builds}"


def test_truncated_tokenizer_in_a_real_pipeline_cache_is_rebuilt(tmp_path):
    recipe = load_recipe(DEFAULT_RECIPE)
    folder, _ = Pipeline(recipe, FixtureCache(tmp_path))._tokenizer_entry
    tokenizer_json = folder / "tokenizer.json"
    size = tokenizer_json.stat().st_size
    tokenizer_json.write_bytes(tokenizer_json.read_bytes()[: size // 2])

    pipeline = Pipeline(recipe, FixtureCache(tmp_path))
    rebuilt, _ = pipeline._tokenizer_entry
    assert rebuilt == folder and tokenizer_json.stat().st_size == size
    assert pipeline.tokenizer.eos_token == "<|im_end|>"
