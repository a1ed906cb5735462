"""Batch plan arithmetic and its CLI contract."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from sft_eval.errors import SftEvalError
from sft_eval.plan import plan_batches


def test_the_lessons_plan():
    plan = plan_batches(100, 1, 8)
    assert (plan.effective_batch, plan.micro_batches_per_rank, plan.optimizer_steps) == (8, 100, 13)
    assert plan.last_step_micro_batches == 4


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((100, 1, 8, 2), (16, 50, 7, 2)),  # two processes: 50 micro-batches each, ceil(50 / 8) = 7
        ((101, 2, 4, 2), (16, 26, 7, 2)),  # 51 global batches, 26 per rank (one repeated to even out)
        ((10, 4, 1, 1), (4, 3, 3, 1)),  # half batch at the end, no accumulation
    ],
    ids=["100x1x8-w2", "101x2x4-w2", "10x4x1"],
)
def test_effective_batch_micro_batches_steps_and_last_step(args, expected):
    plan = plan_batches(*args)
    assert (
        plan.effective_batch,
        plan.micro_batches_per_rank,
        plan.optimizer_steps,
        plan.last_step_micro_batches,
    ) == expected


def test_drop_last_epochs_and_max_steps():
    assert plan_batches(10, 4, 1, drop_last=True).micro_batches_per_rank == 2
    assert plan_batches(100, 1, 8, epochs=2.5).optimizer_steps == math.ceil(2.5 * 13)
    assert plan_batches(100, 1, 8, epochs=None, max_steps=5).optimizer_steps == 5


@pytest.mark.parametrize(
    "args", [(0, 1, 1), (10, 0, 1), (10, 1, 0), (10, 1, 1, 0)], ids=["rows", "batch", "accum", "world"]
)
def test_nonsense_is_refused(args):
    with pytest.raises(SftEvalError, match="must be at least 1"):
        plan_batches(*args)


def test_cli_json_contract(cli):
    result = cli.run("plan", "--rows", "100", "--per-device-batch", "1", "--grad-accum", "8", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["effective_batch"], data["micro_batches_per_rank"], data["optimizer_steps"]) == (8, 100, 13)


def test_cli_bad_input_is_exit_2_in_one_line(cli):
    for args in (
        ["--rows", "0", "--per-device-batch", "1", "--grad-accum", "8"],
        ["--rows", "10", "--per-device-batch", "1", "--grad-accum", "8", "--epochs", "1", "--max-steps", "3"],
        ["--rows", "ten", "--per-device-batch", "1", "--grad-accum", "8"],
        ["--rows", "10", "--per-device-batch", "1", "--grad-accum", "8", "--epochs", "nan"],
        ["--rows", "10", "--per-device-batch", "1", "--grad-accum", "8", "--epochs", "inf"],
        ["--rows", "10", "--per-device-batch", "1", "--grad-accum", "8", "--epochs", "0"],
        ["--rows", "10", "--per-device-batch", "1", "--grad-accum", "8", "--max-steps", "0"],
    ):
        cli.bad_input(cli.run("plan", *args))


# -- the recipe's plan without importing TRL ----------------------------------------------------------------------
RECIPES = Path(__file__).resolve().parent.parent / "fixtures" / "recipes"
PLAN_VARIANTS = {
    "as shipped": {},
    "epochs 2.5, batch 3 x 5": {
        "num_train_epochs": 2.5,
        "per_device_train_batch_size": 3,
        "gradient_accumulation_steps": 5,
    },
    "max_steps 7": {"max_steps": 7},
    "drop_last": {"dataloader_drop_last": True, "per_device_train_batch_size": 16},
}


@pytest.mark.parametrize("variant", list(PLAN_VARIANTS))
@pytest.mark.parametrize("name", ["tiny.toml", "tiny_lora.toml", "seed_lesson.toml"])
def test_the_plan_from_the_schema_is_the_plan_of_the_sftconfig_training_builds(name, variant):
    """`recipe_plan` reads SFTConfig's defaults from the cached schema; the SFTConfig built for training must give
    the same plan, for each shipped recipe and a few `[sft]` settings (TRL's defaults where the recipe is silent)."""
    from sft_eval.plan import plan_from_config
    from sft_eval.recipe import load_recipe
    from sft_eval.trainer_config import recipe_config, recipe_plan

    recipe = load_recipe(RECIPES / name).with_sft(**PLAN_VARIANTS[variant])
    for rows, world in ((100, 1), (421, 2), (33, 1)):
        assert recipe_plan(recipe, rows, world) == plan_from_config(recipe_config(recipe), rows, world)


def test_a_default_the_schema_lacks_is_read_from_sftconfig(monkeypatch):
    """A plan field whose default the schema could not keep (not a JSON value in some TRL) is taken from the
    SFTConfig built for training instead of failing."""
    import sft_eval.trainer_config as trainer_config
    from sft_eval.plan import plan_from_config
    from sft_eval.recipe import load_recipe
    from sft_eval.sftconfig import sft_config_schema

    schema = sft_config_schema()
    lacking = {**schema, "defaults": {k: v for k, v in schema["defaults"].items() if k != "num_train_epochs"}}
    monkeypatch.setattr(trainer_config, "sft_config_schema", lambda: lacking)
    recipe = load_recipe(RECIPES / "tiny.toml")
    recipe = dataclasses.replace(recipe, sft={k: v for k, v in recipe.sft.items() if k != "num_train_epochs"})
    built = []
    real = trainer_config.recipe_config
    monkeypatch.setattr(trainer_config, "recipe_config", lambda r: built.append(r) or real(r))
    assert trainer_config.recipe_plan(recipe, 100) == plan_from_config(real(recipe), 100) and len(built) == 1


def test_the_schema_is_kept_per_version_and_read_without_importing_trl(tmp_path, monkeypatch):
    """Issue 42: read from the installed sources on an empty cache with TRL unimportable, kept in
    `<cache>/schemas/`, read from there next time; a corrupt file is read again from the sources."""
    import sys

    from sft_eval.sftconfig import sft_config_schema

    monkeypatch.setenv("SFT_EVAL_CACHE", str(tmp_path))
    monkeypatch.setitem(sys.modules, "trl", None)  # `from trl import ...` now raises ImportError
    built = sft_config_schema()
    (kept,) = (tmp_path / "schemas").glob("sftconfig-trl-*-transformers-*.json")
    assert "per_device_train_batch_size" in built["fields"] and built["defaults"]["gradient_accumulation_steps"] == 1
    assert sft_config_schema() == built
    kept.write_text("{not json", encoding="utf-8")
    assert sft_config_schema() == built and json.loads(kept.read_text(encoding="utf-8")) == built


def test_the_fields_read_from_the_sources_are_sftconfigs_own():
    """The `ast` reading follows SFTConfig's bases into transformers' TrainingArguments: the same init fields in
    the same order as `dataclasses.fields(SFTConfig)`, and each default it keeps is SFTConfig's (the ones redefined
    by TRL, such as gradient_checkpointing and logging_steps, with TRL's value)."""
    from sft_eval.sftconfig import imported_fields, read_fields
    from sft_eval.trainer_config import PLAN_FIELDS

    fields, defaults = read_fields("trl", "trl/trainer/sft_config.py", "SFTConfig")
    real_fields, real_defaults = imported_fields()
    assert fields == real_fields, set(fields) ^ set(real_fields)
    wrong = {k: (v, real_defaults.get(k)) for k, v in defaults.items() if real_defaults.get(k, object()) != v}
    assert not wrong, f"defaults read from the sources differ from SFTConfig's: {wrong}"
    assert all(k in defaults for k in PLAN_FIELDS), [k for k in PLAN_FIELDS if k not in defaults]
    assert defaults["gradient_checkpointing"] is True and defaults["logging_steps"] == 10  # TRL's, not transformers'


def test_sources_that_do_not_read_plainly_fall_back_to_importing_trl(tmp_path, monkeypatch):
    """The broken case: a base class the reader cannot follow is `Unreadable`, and the schema comes from TRL."""
    from sft_eval import sftconfig

    module = tmp_path / "pkg" / "config.py"
    module.parent.mkdir()
    module.write_text(
        "from dataclasses import dataclass\nfrom somewhere import make_base\n\n@dataclass\n"
        "class Config(make_base()):\n    x: int = 1\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(sftconfig, "installed_source", lambda package, relative: tmp_path / relative)
    with pytest.raises(sftconfig.Unreadable, match="not a plain name"):
        sftconfig.read_fields("pkg", "pkg/config.py", "Config")
    monkeypatch.setenv("SFT_EVAL_CACHE", str(tmp_path / "cache"))
    imported = []
    monkeypatch.setattr(sftconfig, "imported_fields", lambda: imported.append(1) or (["learning_rate"], {}))
    assert sftconfig.sft_config_schema()["fields"] == ["learning_rate"] and imported == [1]
