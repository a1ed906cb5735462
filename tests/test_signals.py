"""Quality beyond exact match: the teacher-forced signals (held-out loss, the expected answers' likelihood,
forgetting) and the answers' length, each firing on a deliberately broken run and quiet on the shipped recipe.

The broken runs are real TRL runs on the session's tiny base or tuned model, each the fewest steps that show its
point (the docstrings say how many and why); everything else reuses the session's fixtures."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest

from sft_eval.answers import Answers
from sft_eval.compare import EXPECTED_NLL_MARGIN, compare_outcomes, outcomes_from_evaluation
from sft_eval.data import load_general_text, split_held_out
from sft_eval.errors import SftEvalError
from sft_eval.pipeline import Pipeline
from sft_eval.recipe import DEFAULT_RECIPE, FIXTURES_DIR, Thresholds, load_recipe
from sft_eval.scoring import IGNORE, Lengths, RowLoss, Signals, mean_nll, score_sequences, text_sequences
from sft_eval.signals import held_out_sequences
from sft_eval.verdict import signal_checks

DATA = FIXTURES_DIR / "data"
LORA_RECIPE = FIXTURES_DIR / "recipes" / "tiny_lora.toml"


def _saved(model, tokenizer, folder: Path) -> Path:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# -- the scoring itself -------------------------------------------------------------------------------------------
def test_batched_scores_equal_one_at_a_time_and_the_models_own_loss(sft_pipeline):
    """Padding and length-sorted batches change no score: each row batched equals the row alone, and its mean NLL
    equals transformers' own loss on it. A row scored on other tokens gives another number (the test can tell)."""
    import torch

    model, tokenizer = sft_pipeline.load_base_model(), sft_pipeline.tokenizer
    rows = text_sequences(tokenizer, load_general_text(DATA / "general_text.txt")[:12], 256)
    rows += held_out_sequences(sft_pipeline.recipe, model, tokenizer, sft_pipeline.held_out_rows)[0][:12]
    batched = score_sequences(model, rows, batch_tokens=300)  # several batches of mixed lengths
    alone = [score_sequences(model, [row])[0] for row in rows]
    assert [len(b) for b in batched] == [sum(t != IGNORE for t in r.labels[1:]) for r in rows]
    assert max(abs(x - y) for b, a in zip(batched, alone, strict=True) for x, y in zip(b, a, strict=True)) < 1e-4
    for row, logprobs in zip(rows, alone, strict=True):
        with torch.no_grad():
            loss = model(input_ids=torch.tensor([row.input_ids]), labels=torch.tensor([row.labels])).loss.item()
        assert mean_nll(logprobs) == pytest.approx(loss, abs=1e-4)
    shifted = dataclasses.replace(rows[-1], labels=[IGNORE, *rows[-1].labels[:-1]])
    assert mean_nll(score_sequences(model, [shifted])[0]) != pytest.approx(mean_nll(alone[-1]), abs=1e-3)


def _trainer_rows(recipe, model, tokenizer, rows, folder: Path) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """What the recipe's trainer feeds its model during training (its own train dataloader, built as `train_sft`
    builds the trainer, LoRA config included), unpadded: (input ids, labels) per row."""
    from trl import SFTTrainer

    from sft_eval.trainer_config import lora_config, sft_config

    config, _ = sft_config(recipe.with_sft(packing=False), str(folder))
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=rows,
        processing_class=copy.deepcopy(tokenizer),
        peft_config=lora_config(recipe),
    )
    found = []
    for batch in trainer.get_train_dataloader():
        for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"], strict=True):
            n = int(mask.sum())
            found.append((tuple(ids[:n].tolist()), tuple(labels[:n].tolist())))
    return sorted(found)


def _completion_recipe(folder: Path) -> Path:
    """The tiny recipe on prompt/completion rows (TRL's completion-only loss), as a user's recipe file."""
    rows = [json.loads(line) for line in (DATA / "sft_heldout.jsonl").read_text(encoding="utf-8").splitlines()]
    pairs = [{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in rows]
    (folder / "pc.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
    text = DEFAULT_RECIPE.read_text(encoding="utf-8").replace('"../data/', f'"{DATA.resolve()}/')
    text = text.replace(f'"{DATA.resolve()}/sft_heldout.jsonl"', f'"{folder / "pc.jsonl"}"')
    text = text.replace("assistant_only_loss = true", "assistant_only_loss = false")
    (folder / "pc.toml").write_text(text, encoding="utf-8")
    return folder / "pc.toml"


@pytest.mark.parametrize("kind", ["assistant-only", "lora", "completion-only"])
def test_held_out_masks_equal_the_trainers_labels(kind, sft_pipeline, tmp_path):
    """The held-out loss scores exactly the tokens training trains: for the default recipe (assistant-only loss),
    the LoRA recipe and a prompt/completion recipe, the held-out sequences and their labels equal what the
    recipe's trainer feeds its model, token for token. Whole-sequence labels (a mask derived another way) differ."""
    recipe = {
        "assistant-only": sft_pipeline.recipe,
        "lora": load_recipe(LORA_RECIPE),
        "completion-only": load_recipe(_completion_recipe(tmp_path)),
    }[kind]
    pipeline = Pipeline(recipe, sft_pipeline.cache, "cpu")
    rows, tokenizer = pipeline.held_out_rows, sft_pipeline.tokenizer
    if kind == "completion-only":
        assert "prompt" in rows.column_names
    ours, labels = held_out_sequences(recipe, sft_pipeline.load_base_model(), tokenizer, rows)
    assert len(ours) == len(rows) and labels[0] == "row 1"
    theirs = _trainer_rows(recipe, sft_pipeline.load_base_model(), tokenizer, rows, tmp_path / "trainer")
    assert sorted((tuple(s.input_ids), tuple(s.labels)) for s in ours) == theirs
    assert all(IGNORE in labels for _, labels in theirs), "the trainer trains only the answers here"
    whole = sorted((tuple(s.input_ids), tuple(s.input_ids)) for s in ours)
    assert whole != theirs


# -- each signal fires on a broken run, quiet on the shipped one ----------------------------------------------------
def test_the_shipped_recipe_passes_every_signal_with_its_margins(sft_pipeline):
    signals, thresholds = sft_pipeline.signals, sft_pipeline.recipe.thresholds
    checks = signal_checks(thresholds, signals)
    assert all(c.passed for c in checks.values()), [c.message for c in checks.values() if not c.passed]
    assert len(signals.held_out) == 28 and signals.eval_loss_drop > 0.9  # 14.5 -> 0.24 nats/token here
    assert signals.forgetting <= thresholds.max_forgetting / 1.1  # 5.42x here against 6.5x
    assert max(r.rise for r in signals.expected) < -5  # every expected answer far likelier than under the base


@pytest.mark.slow
def test_a_tuned_model_that_learned_nothing_fails_the_held_out_loss(sft_pipeline, tmp_path):
    """Trains one step at lr 1e-7: a tuned model that is the base in all but its last bits (the pipeline refuses
    the base's own weights as `model.tuned`, so "nothing learned" is a run that changed nothing)."""
    _, model = sft_pipeline.train_variant(16, tmp_path / "trainer", max_steps=1, learning_rate=1e-7)
    folder = _saved(model, sft_pipeline.tokenizer, tmp_path / "nothing-learned")
    signals = sft_pipeline.with_tuned(folder).signals
    checks = signal_checks(sft_pipeline.recipe.thresholds, signals)
    assert abs(signals.eval_loss_drop) < 0.01
    assert checks["signals.eval_loss"].passed is False
    assert "the recipe asks for 10%" in checks["signals.eval_loss"].message
    # it never learned to stop either: its answers run to max_new_tokens, far past the training answers' length
    assert checks["signals.length"].passed is False and "never to stop early" in checks["signals.length"].message


@pytest.mark.slow
def test_forgetting_fires_on_a_run_trained_far_past_it(sft_pipeline, tmp_path):
    """Trains 100 epochs of 16 rows at lr 2e-2 (100 steps): far past the point of forgetting, ~10x the base's
    general-text loss against the shipped run's 5.42x; the shipped recipe's 6.5x lies between."""
    _, model = sft_pipeline.train_variant(16, tmp_path / "trainer", num_train_epochs=100, learning_rate=2e-2)
    folder = _saved(model, sft_pipeline.tokenizer, tmp_path / "far-past")
    signals = sft_pipeline.with_tuned(folder).signals
    check = signal_checks(sft_pipeline.recipe.thresholds, signals)["signals.forgetting"]
    assert check.passed is False and signals.forgetting > sft_pipeline.recipe.thresholds.max_forgetting
    assert "the recipe allows 6.5x" in check.message
    assert signals.forgetting > sft_pipeline.signals.forgetting * 1.3


WRONG = {"chien": "chat", "arbre": "pomme", "voiture": "maison", "rouge": "vert", "vert": "rouge"}


@pytest.mark.slow
def test_answers_trained_wrong_become_less_likely_and_are_flagged_per_question(sft_pipeline, tmp_path):
    """Trains the shipped tuned model 2 more epochs (54 steps) on its rows with five facts' answers made wrong:
    against the shipped run (the baseline), those questions' expected answers became less likely, and only
    questions among them are listed as worse by more than the margin; the greedy text of the others is unchanged."""
    from datasets import Dataset

    from sft_eval.training import train_sft

    rows = [
        {"messages": [*r["messages"][:-1], {"role": "assistant", "content": WRONG.get(a, a)}]}
        for r in sft_pipeline.rows
        if (a := r["messages"][-1]["content"])
    ]
    recipe = sft_pipeline.recipe.with_sft(num_train_epochs=2, warmup_steps=0, logging_steps=1)
    tuned = copy.deepcopy(sft_pipeline.tuned_model)
    _, model = train_sft(recipe, tuned, sft_pipeline.tokenizer, Dataset.from_list(rows), str(tmp_path / "trainer"))
    wrong = sft_pipeline.with_tuned(_saved(model, sft_pipeline.tokenizer, tmp_path / "wrong"))
    comparison = compare_outcomes(
        outcomes_from_evaluation(sft_pipeline.evaluation, signals=sft_pipeline.signals),
        outcomes_from_evaluation(wrong.evaluation, signals=wrong.signals),
    )
    nll = next(m for m in comparison.metrics if m.metric == "expected-answer NLL")
    corrupted = {q.question for q in sft_pipeline.questions if q.expected in WRONG}
    assert len(corrupted) == 5
    assert set(nll.worse) <= corrupted and len(nll.worse) >= 3, nll.worse
    rises = {
        r.label: w.tuned - r.tuned for r, w in zip(sft_pipeline.signals.expected, wrong.signals.expected, strict=True)
    }
    assert all(rises[q] > EXPECTED_NLL_MARGIN for q in nll.worse)
    # the same run against the shipped run's own expected answers, unchanged: nothing is worse
    same = compare_outcomes(*[outcomes_from_evaluation(sft_pipeline.evaluation, signals=sft_pipeline.signals)] * 2)
    assert next(m for m in same.metrics if m.metric == "expected-answer NLL").worse == []


def _signals(**changes) -> Signals:
    rows = [RowLoss(f"q{i}", 3, 5.0, 1.0) for i in range(4)]
    base = Signals(held_out=rows, expected=rows, general=[RowLoss("d", 10, 2.0, 2.1)], lengths=Lengths([9], [9], [9]))
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize(
    ("changes", "failed", "says"),
    [
        ({}, None, ""),
        ({"held_out": [RowLoss("row 1", 3, 5.0, 4.9)]}, "signals.eval_loss", "a 2.0% drop"),
        ({"general": [RowLoss("d", 10, 2.0, 2.4)]}, "signals.forgetting", "1.20x the base's"),
        ({"expected": [RowLoss("Capital?", 2, 1.0, 1.6)]}, "signals.expected_likelihood", "'Capital?': 1.00 -> 1.60"),
        ({"lengths": Lengths([50], [2, 3, 3], [12, 14])}, "signals.length", "learned to be terse"),
        ({"lengths": Lengths([50], [100], [12, 14])}, "signals.length", "never to stop early"),
    ],
)
def test_each_signal_check_fires_alone(changes, failed, says):
    """Plain data: one broken signal fails its own check and only it, with a message saying by how much."""
    checks = signal_checks(Thresholds(), _signals(**changes))
    assert [c.name for c in checks.values() if c.passed is False] == ([failed] if failed else [])
    if failed:
        assert says in checks[failed].message


def test_a_signal_with_nothing_to_measure_is_not_judged_and_says_why():
    checks = signal_checks(Thresholds(), Signals())
    assert all(c.passed is None for c in checks.values())
    assert "set `data.eval` or `data.eval_fraction`" in checks["signals.eval_loss"].message
    assert "set `eval.general_text`" in checks["signals.forgetting"].message


def test_signals_round_trip_through_json():
    signals = _signals()
    assert Signals.from_dict(json.loads(json.dumps(signals.to_dict()))) == signals


# -- the held-out split -----------------------------------------------------------------------------------------------
def test_eval_fraction_holds_out_a_seeded_share_training_never_sees(tiny_variant):
    recipe = load_recipe(tiny_variant({'eval = "': 'eval_fraction = 0.1\n# eval = "'}))
    pipeline = Pipeline(recipe, device="cpu")
    train, held = pipeline.rows, pipeline.held_out_rows
    assert len(held) == 42 and len(train) == 421 - 42
    as_text = {json.dumps(r, sort_keys=True) for r in train}
    assert not any(json.dumps(r, sort_keys=True) in as_text for r in held)
    again, _ = split_held_out(pipeline.loaded_rows, 0.1, recipe.seed)
    assert again["messages"] == train["messages"]  # the same rows, in file order, every time
    other, _ = split_held_out(pipeline.loaded_rows, 0.1, recipe.seed + 1)
    assert other["messages"] != train["messages"]
    with pytest.raises(SftEvalError, match="at least one row must be held out"):
        split_held_out(pipeline.loaded_rows.select(range(3)), 0.1, 0)


@pytest.mark.parametrize(
    ("edits", "says"),
    [
        ({"[data]": "[data]\neval_fraction = 0.2"}, "set `data.eval` (a held-out file) or `data.eval_fraction`"),
        ({'eval = "': 'eval_fraction = 1.0\n# eval = "'}, "`data.eval_fraction` must be above 0 and below 1"),
        ({'eval = "': 'eval = "missing.jsonl"\n# "'}, "`data.eval` names"),
        ({'general_text = "': 'general_text = "notes.md"\n# "'}, "`eval.general_text` must be a .txt or .jsonl"),
        ({'general_text = "': 'general_text = "gone.txt"\n# "'}, "`eval.general_text` names"),
        ({"max_forgetting = 6.5": "max_forgetting = 0.9"}, "`thresholds.max_forgetting` must be a finite number"),
        ({"[thresholds]": "[thresholds]\nmin_eval_loss_drop = 1.5"}, "`thresholds.min_eval_loss_drop` must be"),
        ({"[thresholds]": "[thresholds]\nmax_length_ratio = 0.5"}, "`thresholds.max_length_ratio` must be"),
        (
            {"[model]": '[model]\ntuned = "."', "[data]": "[data]\neval_fraction = 0.1", 'eval = "': '# eval = "'},
            "name its held-out rows as `data.eval`",
        ),
    ],
)
def test_bad_signal_keys_are_one_line(edits, says, tiny_variant):
    with pytest.raises(SftEvalError, match=None) as raised:
        load_recipe(tiny_variant(edits))
    assert says in str(raised.value) and "\n" not in str(raised.value)


def test_a_general_text_that_is_a_folder_is_one_line(tiny_variant, tmp_path, cli):
    """Issue 44, cause 4: a folder named like a text file was an IsADirectoryError traceback (44 lines)."""
    folder = tmp_path / "general.txt"
    folder.mkdir()
    recipe = tiny_variant({'general_text = "': f'general_text = "{folder}"\n# "'})
    cli.bad_input(cli.main("audit", "--recipe", str(recipe)), f"`eval.general_text` names {folder}, which is a folder")


def test_a_bad_general_text_line_is_named(tmp_path):
    bad = tmp_path / "general.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": 3}\n', encoding="utf-8")
    with pytest.raises(SftEvalError, match=r"general\.jsonl:2: needs a non-empty string `text`"):
        load_general_text(bad)


# -- the report and the one verdict -----------------------------------------------------------------------------------
def test_report_shows_the_signals_and_exits_1_on_a_failed_one(sft_pipeline, tiny_variant, tmp_path, cli):
    """`sft-eval report` on the shipped run held to a real model's forgetting bound (1.15x) fails
    signals.forgetting, names it, and its JSON carries the signals; the suites fail the same check."""
    recipe = tiny_variant({"max_forgetting = 6.5": "max_forgetting = 1.15"})
    env = {"SFT_EVAL_CACHE": str(sft_pipeline.cache.root)}
    result = cli.main("report", "--recipe", str(recipe), "--out", str(tmp_path / "out"), env=env)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "FAILED signals.forgetting: general-text loss" in result.stdout
    context = json.loads((tmp_path / "out" / "sft_report.json").read_text(encoding="utf-8"))
    assert context["signals"]["forgetting"] == pytest.approx(sft_pipeline.signals.forgetting)
    assert {c["name"]: c["passed"] for c in context["checks"]}["signals.forgetting"] is False
    assert all("expected_nll" in card for card in context["cards"] if card["expected"])
    html = (tmp_path / "out" / "sft_report.html").read_text(encoding="utf-8")
    assert 'id="signals"' in html and "at most 1.15x" in html
    suites = cli.pytest("suites/test_signals.py", "-q", "--sft-recipe", str(recipe), env=env)
    assert suites.returncode == 1, suites.stdout[-2000:]
    assert "FAILED suites/test_signals.py::test_general_text_not_forgotten" in suites.stdout, suites.stdout[-2000:]


@pytest.mark.parametrize(
    ("path", "value", "says"),
    [
        (("signals", "comparison"), "x", 'signals.comparison is "x", not a list'),
        (("signals", "forgetting"), "high", "signals.forgetting"),
        (("signals", "eval_loss"), [1.0], "signals.eval_loss is [1.0], not a [number, number] pair"),
        (("cards", 2, "expected_nll"), {"base": 1.0}, "cards[2].expected_nll"),
        (("categories", 1, "tuned"), None, "categories[1].tuned is null"),
        (("categories", 1, "questions"), "two", "categories[1]"),
    ],
)
def test_a_bad_signals_field_in_a_report_json_is_one_line(path, value, says, sft_pipeline, tmp_path):
    from sft_eval.report import read_report_json

    context = json.loads(json.dumps(sft_pipeline.report_context()))
    target = context
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    (tmp_path / "r.json").write_text(json.dumps(context), encoding="utf-8")
    with pytest.raises(SftEvalError) as raised:
        read_report_json(tmp_path / "r.json")
    assert says in str(raised.value)


# -- free-form similarity and categories ----------------------------------------------------------------------------
def test_chrf_is_sacrebleus_and_grades_what_exact_match_cannot():
    from sacrebleu import sentence_chrf

    from sft_eval.data import normalise
    from sft_eval.sanity import chrf

    said, expected = "Paris is the capital of France.", "The capital of France is Paris."
    assert chrf(said, expected) == pytest.approx(sentence_chrf(said, [expected]).score)
    assert normalise(said) != normalise(expected) and chrf(said, expected) > 60
    assert chrf(expected, expected) == 100.0
    assert chrf("I like turtles.", expected) < 20


def test_the_chrf_check_fires_below_its_threshold_and_alone(sft_evaluation, sft_recipe, sft_tokenizer):
    from sft_eval.verdict import response_checks

    tuned = sft_evaluation.tuned_summary.mean_chrf
    assert sft_evaluation.base_summary.mean_chrf < 10 < sft_recipe.thresholds.min_chrf < tuned  # 2.3 -> 83.4 here
    strict = dataclasses.replace(sft_recipe.thresholds, min_chrf=tuned + 1)
    checks = response_checks(strict, sft_evaluation, sft_tokenizer.eos_token)
    assert [c.name for c in checks.values() if c.passed is False] == ["responses.chrf"]
    assert "chrF 0.0, got" in checks["responses.chrf"].message  # the lowest-scoring answers listed first


def test_every_metric_is_broken_down_by_category(sft_pipeline):
    """The shipped questions' categories: overall exact match holds (0.82), while every `copy` question misses."""
    context = sft_pipeline.report_context()
    rows = {row["category"]: row for row in context["categories"]}
    assert set(rows) == {"(none)", "greeting", "translation", "capital", "opposite", "copy"}
    assert sum(row["questions"] for row in rows.values()) == len(sft_pipeline.questions)
    assert rows["copy"]["tuned"]["match_rate"] == 0.0 < rows["capital"]["tuned"]["match_rate"]
    assert rows["copy"]["expected_nll"]["tuned"] > rows["capital"]["expected_nll"]["tuned"]
    assert {"mean_chrf", "eos_stop_rate", "mean_repetition", "leak_rate"} <= set(rows["copy"]["tuned"])
    html = __import__("sft_eval.report", fromlist=["render_html"]).render_html(json.loads(json.dumps(context)))
    assert 'id="categories"' in html


def test_a_questions_file_with_one_category_has_no_breakdown_and_a_bad_one_is_named(sft_pipeline, tmp_path):
    from sft_eval.data import load_questions

    bad = tmp_path / "questions.jsonl"
    bad.write_text('{"question": "a?", "category": "x"}\n{"question": "b?", "category": 7}\n', encoding="utf-8")
    recipe = dataclasses.replace(
        sft_pipeline.recipe, eval=dataclasses.replace(sft_pipeline.recipe.eval, questions=(), questions_file=str(bad))
    )
    with pytest.raises(SftEvalError, match=r"questions\.jsonl:2: `category` must be a string"):
        load_questions(recipe)
    from sft_eval.report import category_rows
    from sft_eval.sanity import Evaluation

    one = Evaluation(
        [
            dataclasses.replace(r, question=dataclasses.replace(r.question, category="x"))
            for r in sft_pipeline.evaluation.records
        ]
    )
    assert category_rows(one, {}) == []


def test_a_served_model_is_not_loaded_for_teacher_forcing_and_says_so(
    sft_pipeline, tiny_variant, registered, monkeypatch
):
    """Teacher-forced scoring needs the weights in this process; a model a server (here, a registered backend
    that is not in-process) answers for may be far larger than this machine holds: nothing is loaded, the
    signals say why they were not judged, and the answers' length is still judged."""
    from sft_eval.generation import register_backend
    from sft_eval.records import Answer

    class Remote:
        def answer(self, questions, settings):
            return [Answer(q, "ok", "ok", [], 2, "eos") for q in questions]

    register_backend("remote", lambda target, settings: Remote())
    pipeline = Pipeline(load_recipe(tiny_variant({"[eval]": '[eval]\nbackend = "remote"'})), sft_pipeline.cache, "cpu")
    monkeypatch.setattr(Answers, "model", lambda self, which: pytest.fail(f"loaded the {which} model"))
    signals = pipeline.signals
    assert signals.held_out == signals.expected == signals.general == [] and signals.lengths.tuned[0] == 2
    checks = signal_checks(pipeline.recipe.thresholds, signals)
    assert [c.passed for c in checks.values()] == [None, None, None, True]
    assert "eval.backend = 'remote'" in checks["signals.forgetting"].message


@pytest.mark.slow
def test_a_run_trained_to_answer_in_one_word_fires_the_length_check(sft_pipeline, asking, tmp_path):
    """Trains the shipped tuned model 2 more epochs (54 steps) on its rows with every answer cut to its first word.
    Judged on the 59 training rows whose answers are sentences (their questions asked): the shipped model answers
    in sentences and passes; the one-word run's median answer falls below a third of the training answers' and
    the length check fires, saying the model learned to be terse."""
    from datasets import Dataset

    from sft_eval.training import train_sft

    rows = [json.loads(line) for line in (DATA / "sft_train.jsonl").read_text(encoding="utf-8").splitlines()]
    sentences = [r for r in rows if len(r["messages"][-1]["content"].split()) >= 4]
    (tmp_path / "sentences.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sentences), encoding="utf-8")
    asked = list(dict.fromkeys(r["messages"][-2]["content"] for r in sentences))[:16]
    sentences_file = {f'train = "{DATA.resolve()}/sft_train.jsonl"': f'train = "{tmp_path / "sentences.jsonl"}"'}
    recipe = load_recipe(asking(asked, sentences_file))
    # the session's base, tokenizer and tuned model by their folders (a tiny recipe on other rows would train
    # another tokenizer): the shipped run, judged on these rows
    folders = {"base": str(sft_pipeline.base_model_dir), "tokenizer": str(sft_pipeline.tuned_model_dir)}
    model = dataclasses.replace(recipe.model, **folders, tuned=str(sft_pipeline.tuned_model_dir))
    shipped = Pipeline(dataclasses.replace(recipe, model=model), sft_pipeline.cache, "cpu")
    one_word = [
        {"messages": [*r["messages"][:-1], {"role": "assistant", "content": r["messages"][-1]["content"].split()[0]}]}
        for r in sft_pipeline.rows
    ]
    tuned = copy.deepcopy(sft_pipeline.tuned_model)
    settings = sft_pipeline.recipe.with_sft(num_train_epochs=2, warmup_steps=0, logging_steps=1)
    _, model = train_sft(
        settings, tuned, sft_pipeline.tokenizer, Dataset.from_list(one_word), str(tmp_path / "trainer")
    )
    terse = shipped.with_tuned(_saved(model, sft_pipeline.tokenizer, tmp_path / "one-word"))
    thresholds = recipe.thresholds
    assert signal_checks(thresholds, shipped.signals)["signals.length"].passed is True, shipped.signals.lengths
    check = signal_checks(thresholds, terse.signals)["signals.length"]
    assert check.passed is False and "learned to be terse" in check.message, terse.signals.lengths
