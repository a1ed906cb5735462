"""The fixture cache never serves a damaged entry, and concurrent builders build once."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sft_eval.cache import MANIFEST, FixtureCache, cache_key, is_sealed
from sft_eval.errors import SftEvalError
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
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith((".lock", ".lock.owner"))] == []
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
    import sft_eval.cache
    from sft_eval.cache import FixtureCache

    if os.environ.get("BREAK_LOCK"):  # the deliberately broken case: no file lock around the build
        class NoLock:
            def __init__(self, *args, **kwargs): pass
            def acquire(self): pass
            def release(self): pass
        sft_eval.cache.FileLock = NoLock

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
    folder, _ = Pipeline(recipe, FixtureCache(tmp_path)).artifacts.tokenizer_entry
    tokenizer_json = folder / "tokenizer.json"
    size = tokenizer_json.stat().st_size
    tokenizer_json.write_bytes(tokenizer_json.read_bytes()[: size // 2])

    pipeline = Pipeline(recipe, FixtureCache(tmp_path))
    rebuilt, _ = pipeline.artifacts.tokenizer_entry
    assert rebuilt == folder and tokenizer_json.stat().st_size == size
    assert pipeline.tokenizer.eos_token == "<|im_end|>"


KILLED_BUILD = """
import os, signal, sys
from sft_eval.cache import FixtureCache

def build(folder):
    (folder / "weights.bin").write_bytes(b"half")
    os.kill(os.getpid(), signal.SIGKILL)  # no finally, no cleanup: what kill -9 or an OOM kill leaves

FixtureCache(sys.argv[1]).get_or_build("tuned", "k", build)
"""


def test_a_build_killed_with_sigkill_leaves_no_staging_folder_after_the_next_run(tmp_path, cli):
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_BUILD, str(tmp_path)], capture_output=True, timeout=cli.hang_guard_s
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert list(tmp_path.glob(".tuned-k.building-*")), "the killed build left nothing behind to collect"
    build = Builder()
    entry = FixtureCache(tmp_path).get_or_build("tuned", "k", build)
    assert build.calls == 1 and is_sealed(entry)
    assert not list(tmp_path.glob(".*.building-*")), "a dead build's staging folder survived the next run"


HOLDS_THE_LOCK = """
import sys, time
from sft_eval.cache import FixtureCache

def build(folder):
    print("building", flush=True)
    time.sleep(600)

FixtureCache(sys.argv[1]).get_or_build("tuned", "k", build)
"""


def test_waiting_on_a_lock_is_bounded_and_names_the_process_holding_it(tmp_path, monkeypatch):
    holder = subprocess.Popen([sys.executable, "-c", HOLDS_THE_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "building"
        monkeypatch.setenv("SFT_EVAL_LOCK_TIMEOUT_S", "1")
        with pytest.raises(SftEvalError, match=rf"still locked after 1 s by pid {holder.pid} "):
            FixtureCache(tmp_path).get_or_build("tuned", "k", Builder())
    finally:
        holder.kill()
        holder.wait()


def test_a_cache_root_that_is_a_file_is_one_line(tmp_path):
    root = tmp_path / "cache"
    root.write_text("not a folder")
    with pytest.raises(SftEvalError, match="fixture cache .*cache: cannot create it"):
        FixtureCache(root).get_or_build("tuned", "k", Builder())


def test_the_tiny_base_is_pretrained_once_per_vocabulary_not_per_template(tmp_path, tiny_variant, sft_pipeline):
    """A template edit that keeps the special tokens trains the same vocabulary, so it reuses the tiny base (its
    pretraining cost 40 s per template in the test run); one with other special tokens, other rows or a tokenizer
    of its own gets another. The tokenizer (it carries the template) stays keyed with the template's text."""
    chatml = Path(DEFAULT_RECIPE).parent.parent / "templates" / "chatml.jinja"
    edited = tmp_path / "edited.jinja"
    edited.write_text("{#- a comment, the same tokens -#}\n" + chatml.read_text(encoding="utf-8"), encoding="utf-8")

    def pipeline(edits: dict[str, str], name: str) -> Pipeline:
        return Pipeline(load_recipe(tiny_variant(edits, name)), sft_pipeline.cache)

    default = pipeline({}, "default.toml")
    same_tokens = pipeline({'chat_template = "chatml"': f'chat_template = "{edited}"'}, "edited.toml")
    other_tokens = pipeline({'chat_template = "chatml"': 'chat_template = "llama3"'}, "llama3.toml")
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(Path(default.recipe.resolve(default.recipe.data.train)).read_text().splitlines(True)[:50]))
    other_rows = pipeline(
        {f'train = "{default.recipe.resolve(default.recipe.data.train)}"': f'train = "{rows}"'}, "r.toml"
    )

    assert (
        default.artifacts.vocabulary_key
        == same_tokens.artifacts.vocabulary_key
        == sft_pipeline.artifacts.vocabulary_key
    )
    assert (
        len(
            {
                default.artifacts.vocabulary_key,
                other_tokens.artifacts.vocabulary_key,
                other_rows.artifacts.vocabulary_key,
            }
        )
        == 3
    )
    assert same_tokens.base_model_dir == sft_pipeline.base_model_dir  # found in the cache: nothing pretrained
    assert same_tokens.artifacts.tokenizer_entry[1] != sft_pipeline.artifacts.tokenizer_entry[1]
    assert same_tokens.tokenizer.chat_template != sft_pipeline.tokenizer.chat_template
