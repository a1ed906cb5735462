"""Golden outputs hold per environment: exact in the one that recorded them, a local baseline in one that did not,
drift shown as old vs new, and the file always inside the recipe's folder."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sft_eval.errors import SftEvalError
from sft_eval.golden import (
    ENVIRONMENT_KEYS,
    TOLERANCE,
    TOP_K,
    check_golden,
    environment,
    golden_drift,
    golden_path,
    golden_record,
    read_golden,
    read_reference,
    reference_record,
    tolerance_for,
    within_tolerance,
    write_golden,
)
from sft_eval.pipeline import Pipeline
from sft_eval.recipe import DEFAULT_RECIPE, FIXTURES_DIR, load_recipe
from sft_eval.records import Answer
from sft_eval.scoring import TopK

SUITES = Path(__file__).resolve().parent.parent / "suites"
AVX2 = {"device": "cpu", "machine": "x86_64", "kernels": "AVX2", "torch": "2.13.0", "transformers": "5.0.0"}
NEON = {**AVX2, "machine": "arm64", "kernels": "DEFAULT"}


def record(*texts: str) -> dict:
    answers = [Answer(f"q{i}", t, t, [i, 7], 2, "eos") for i, t in enumerate(texts)]
    return golden_record(answers)


def test_no_drift_no_diff():
    assert golden_drift(record("Paris", "Rome"), record("Paris", "Rome")) == ""


def test_a_changed_answer_shows_old_and_new():
    drift = golden_drift(record("Paris", "Rome"), record("Paris", "Roma"))
    assert "-'q1' -> 'Rome'" in drift and "+'q1' -> 'Roma'" in drift and "Paris" not in drift


def test_changed_token_ids_with_the_same_text_are_drift():
    old, new = record("Paris"), record("Paris")
    new["answers"][0]["token_ids"] = [0, 8]
    assert golden_drift(old, new)


def test_the_environment_names_device_kernels_and_versions():
    env = environment("cpu")
    assert tuple(env) == ENVIRONMENT_KEYS and env["device"] == "cpu" and env["kernels"], env


def test_its_own_environments_entry_is_compared_exactly(tmp_path):
    path = tmp_path / "golden" / "r.json"
    write_golden(path, record("Paris", "Rome"), AVX2)
    assert check_golden(path, record("Paris", "Rome"), AVX2, tmp_path / "local").status == "match"
    verdict = check_golden(path, record("Paris", "Roma"), AVX2, tmp_path / "local")
    assert verdict.status == "drift" and "1 of 2" in verdict.message and "+'q1' -> 'Roma'" in verdict.diff


def test_another_environment_records_a_local_baseline_and_is_held_to_it_next_time(tmp_path):
    path = tmp_path / "golden" / "r.json"
    write_golden(path, record("Paris", "Rome"), AVX2)
    first = check_golden(path, record("Paris", "Roma"), NEON, tmp_path / "local")
    assert first.status == "baseline", first
    assert "no golden outputs for cpu/arm64/DEFAULT" in first.message and "differs in 1 of 2" in first.message
    assert check_golden(path, record("Paris", "Roma"), NEON, tmp_path / "local").status == "match"
    again = check_golden(path, record("Paris", "Rome"), NEON, tmp_path / "local")
    assert again.status == "drift" and "local baseline" in again.message, again
    assert read_golden(path)[0]["environment"] == AVX2 and len(read_golden(path)) == 1, "the file was not touched"


def test_update_writes_this_environments_entry_and_keeps_the_others(tmp_path):
    path = tmp_path / "golden" / "r.json"
    write_golden(path, record("Paris"), AVX2)
    assert check_golden(path, record("Oslo"), NEON, tmp_path / "local", update=True).status == "recorded"
    write_golden(path, record("Rome"), AVX2)
    entries = {e["environment"]["machine"]: e["answers"][0]["text"] for e in read_golden(path)}
    assert entries == {"arm64": "Oslo", "x86_64": "Rome"}


def test_a_golden_file_of_the_first_format_matches_no_environment(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps(record("Paris")), encoding="utf-8")
    assert check_golden(path, record("Paris"), AVX2, tmp_path / "local").status == "baseline"


def test_an_unreadable_golden_file_is_one_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(SftEvalError, match="bad.json: not a readable golden file"):
        check_golden(path, record("Paris"), AVX2, tmp_path / "local")


def test_the_shipped_recipe_keeps_its_golden_file_beside_it_with_entries_for_two_cpu_kinds():
    path = golden_path(load_recipe(DEFAULT_RECIPE))
    assert path == FIXTURES_DIR / "recipes" / "golden" / "tiny.json" and path.is_file()
    kinds = {(e["environment"]["machine"], e["environment"]["kernels"]) for e in read_golden(path)}
    assert {("x86_64", "AVX2"), ("x86_64", "DEFAULT")} <= kinds, kinds


def test_the_golden_file_is_the_recipes_key_or_beside_it(tmp_path):
    text = 'name = "mine"\n[data]\ntrain = "rows.jsonl"\n[eval]\nquestions = ["Hi"]\n'
    (tmp_path / "a.toml").write_text(text, encoding="utf-8")
    assert golden_path(load_recipe(tmp_path / "a.toml")) == tmp_path / "golden" / "mine.json"
    (tmp_path / "b.toml").write_text(text + 'golden = "checks/answers.json"\n', encoding="utf-8")
    assert golden_path(load_recipe(tmp_path / "b.toml")) == tmp_path / "checks" / "answers.json"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ('name = "../../escape"\n', "`name` must be a plain name"),
        ('name = "x"\n[eval]\ngolden = "../outside.json"\n', "`eval.golden` must be a .json file inside"),
    ],
    ids=["name-with-a-path", "golden-outside-the-folder"],
)
def test_a_golden_file_outside_the_recipes_folder_is_refused(tmp_path, edit, message):
    text = edit + ('[eval]\nquestions = ["Hi"]\n' if "[eval]" not in edit else 'questions = ["Hi"]\n')
    (tmp_path / "r.toml").write_text(text + '[data]\ntrain = "rows.jsonl"\n', encoding="utf-8")
    with pytest.raises(SftEvalError, match=message):
        load_recipe(tmp_path / "r.toml")


def test_the_check_fails_on_a_real_drift_in_the_recording_environment(sft_pipeline, sft_evaluation, tmp_path):
    """Recorded from the tuned model here, then held against other real answers in the same environment: the
    base model's (a model that is not the one recorded), and the tuned model asked with a system message."""
    env = environment(str(sft_pipeline.device))
    questions = [q.question for q in sft_evaluation.questions]
    path = tmp_path / "golden" / "tiny.json"
    write_golden(path, golden_record(sft_evaluation.tuned), env)
    same = check_golden(path, golden_record(sft_evaluation.tuned), env, tmp_path / "local")
    assert same.status == "match", same
    other_model = check_golden(path, golden_record(sft_evaluation.base), env, tmp_path / "local")
    assert other_model.status == "drift" and f"{len(questions)} of {len(questions)}" in other_model.message


@pytest.mark.slow
def test_a_users_recipe_records_its_golden_file_inside_its_folder(tiny_variant, sft_pipeline, tmp_path, cli):
    """`pytest suites/test_golden.py --sft-recipe proj/recipe.toml --sft-update-golden` writes proj/golden/ and
    nothing else outside proj/; the next run holds the answers to it, and a changed generation setting fails it."""
    project = tmp_path / "proj"
    project.mkdir()
    recipe = tiny_variant({'name = "tiny"': 'name = "mine"'}).rename(project / "recipe.toml")
    shipped = {p: p.stat().st_mtime_ns for p in (FIXTURES_DIR / "recipes").rglob("*")}
    before = {p for p in tmp_path.rglob("*")}

    def run(*extra: str) -> subprocess.CompletedProcess:
        return cli.pytest(
            str(SUITES / "test_golden.py"),
            "-q",
            f"--sft-recipe={recipe}",
            f"--sft-cache={sft_pipeline.cache.root}",
            *extra,
            cwd=project,
        )

    recorded = run("--sft-update-golden")
    assert recorded.returncode == 0, recorded.stdout[-3000:]
    written = {p for p in tmp_path.rglob("*")} - before
    assert project / "golden" / "mine.json" in written
    assert all(p.is_relative_to(project) for p in written), sorted(map(str, written))
    assert {p: p.stat().st_mtime_ns for p in (FIXTURES_DIR / "recipes").rglob("*")} == shipped
    assert run().returncode == 0
    # A changed generation setting: every answer of two or more tokens is cut, on any machine.
    recipe.write_text(recipe.read_text(encoding="utf-8").replace("max_new_tokens = 100", "max_new_tokens = 1"))
    drifted = run()
    assert drifted.returncode == 1 and "drifted from the golden reference" in drifted.stdout, drifted.stdout[-3000:]


SWITCH_PROBE = """
import json
from sft_eval.cache import cache_key
from sft_eval.golden import environment, golden_path, read_golden
from sft_eval.recipe import DEFAULT_RECIPE, load_recipe
env = environment("cpu")
entries = read_golden(golden_path(load_recipe(DEFAULT_RECIPE)))
kind = lambda e: [e.get(k) for k in ("device", "machine", "kernels")]
entry = any(kind(e["environment"]) == kind(env) for e in entries)
print(json.dumps({"env": env, "key": cache_key("tuned", {}), "entry": entry}))
"""


def test_a_forced_kernel_set_is_another_environment_with_cache_entries_of_its_own(cli):
    """`ATEN_CPU_CAPABILITY=default` makes this machine compute as a CPU without AVX would: the environment says
    so, the fixture cache keys differ (no weights trained under one kernel set are served to the other), and the
    shipped golden file has an entry for that kind of CPU (its versions may differ from this environment's)."""
    if environment("cpu")["machine"] not in ("x86_64", "amd64"):
        pytest.skip("the shipped golden entries are for x86-64 kernel sets")

    def probe(**env: str) -> dict:
        result = subprocess.run(
            [sys.executable, "-c", SWITCH_PROBE],
            capture_output=True,
            text=True,
            env=env,
            timeout=cli.hang_guard_s,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        return json.loads(result.stdout.strip().splitlines()[-1])

    native, portable = probe(), probe(ATEN_CPU_CAPABILITY="default")
    assert portable["env"]["kernels"] == "DEFAULT" and native["env"]["kernels"] != "DEFAULT", (native, portable)
    assert portable["key"] != native["key"]
    assert portable["entry"], "the shipped golden file has no entry for ATen's portable kernels"


# -- the default comparison: the reference within a tolerance -------------------------------------------------
def reference(*answers: list[int]) -> dict:
    """A reference of greedy answers (token ids) after the prompt [1, 2]: each answer token's logprob -0.1, and at
    each position the top-5 ids 10..14 around it, with the answer's own token first."""

    def top(token: int) -> list[int]:
        return [token, *[t for t in range(10, 15) if t != token]][:5]

    return {
        "environment": AVX2,
        "dtype": "float32",
        "k": 5,
        "answers": [
            {
                "question": f"q{i}",
                "text": "",
                "prompt_ids": [1, 2],
                "token_ids": ids,
                "logprobs": [-0.1] * len(ids),
                "top_ids": [top(t) for t in ids],
                "top_logprobs": [[-0.1, -0.1002, -3.0, -4.0, -5.0] for _ in ids],
            }
            for i, ids in enumerate(answers)
        ],
    }


def now_answers(*answers: list[int]) -> list[Answer]:
    return [Answer(f"q{i}", "", "", ids, len(ids), "eos") for i, ids in enumerate(answers)]


def same_scores(ref: dict, shift: float = 0.0, at: int = 0) -> list[TopK]:
    """Today's teacher-forced scores of the reference answers: the reference's, with `shift` nats added at
    position `at` of every answer."""
    return [
        TopK(
            [lp + (shift if t == at else 0.0) for t, lp in enumerate(a["logprobs"])],
            [list(ids) for ids in a["top_ids"]],
            [list(lps) for lps in a["top_logprobs"]],
        )
        for a in ref["answers"]
    ]


def judge(ref: dict, answers: list[Answer], scores: list[TopK], prompts: list[list[int]] | None = None):
    return within_tolerance(ref, answers, prompts or [[1, 2]] * len(answers), scores, 1e-3)


def test_the_same_answers_and_logprobs_within_the_tolerance_match():
    ref = reference([10, 11, 3], [12, 3])
    verdict = judge(ref, now_answers([10, 11, 3], [12, 3]), same_scores(ref, shift=4e-4))
    assert verdict.status == "match" and "largest teacher-forced difference 0.0004" in verdict.message, verdict


def test_a_logprob_that_moved_beyond_the_tolerance_is_drift_naming_the_position():
    ref = reference([10, 11, 3], [12, 3])
    verdict = judge(ref, now_answers([10, 11, 3], [12, 3]), same_scores(ref, shift=-0.05, at=1))
    assert verdict.status == "drift" and "2 of 2" in verdict.message, verdict
    assert "'q0': at answer position 1 the golden token 11 has logprob -0.150000 now, -0.100000 in the golden" in (
        verdict.diff
    )


def test_a_greedy_answer_that_parts_at_a_near_tie_matches():
    """At position 1 the reference's second choice (10, 0.0002 nats below its first) is today's greedy token:
    both are in each other's top-5 and 0.0002 apart, below the tolerance, so this is inference drift."""
    ref = reference([10, 11, 3])
    scores = same_scores(ref)
    scores[0].top_ids[1][:2], scores[0].top_logprobs[1][:2] = [10, 11], [-0.1, -0.1002]
    verdict = judge(ref, now_answers([10, 10, 5]), scores)
    assert verdict.status == "match" and "1 near ties" in verdict.message, verdict


def test_a_greedy_answer_that_parts_beyond_a_tie_is_drift_with_both_tokens_and_logprobs():
    """The golden token keeps its logprob, but today's model puts another token 0.05 nats above it where the
    reference had it 0.4 below: not a tie on either side."""
    ref = reference([10, 11, 3])
    ref["answers"][0]["top_logprobs"][1] = [-0.1, -0.5, -3.0, -4.0, -5.0]  # 11 first, 10 second
    scores = same_scores(ref)
    scores[0].top_ids[1][:2], scores[0].top_logprobs[1][:2] = [10, 11], [-0.05, -0.1]
    verdict = judge(ref, now_answers([10, 10, 5]), scores)
    assert verdict.status == "drift", verdict
    assert (
        "first divergence at answer position 1: golden 11 (logprob -0.100000 golden, -0.100000 now), "
        "now 10 (logprob -0.500000 golden, -0.050000 now)"
    ) in verdict.diff, verdict.diff


def test_a_token_outside_the_others_top_k_is_drift():
    ref = reference([10, 11, 3])
    verdict = judge(ref, now_answers([10, 99, 3]), same_scores(ref))
    assert verdict.status == "drift" and "now 99 (logprob not in the top-k golden, not in the top-k now)" in (
        verdict.diff
    ), verdict.diff


def test_a_changed_prompt_a_shorter_answer_and_unmatched_questions_are_drift():
    ref = reference([10, 11, 3], [12, 3], [13, 3])
    answers = [*now_answers([10, 11, 3], [12]), Answer("new", "", "", [3], 1, "eos")]
    verdict = judge(ref, answers, same_scores(ref), prompts=[[1, 5], [1, 2], [1, 2]])
    assert verdict.status == "drift" and "4 of 4 tuned answers" in verdict.message, verdict
    assert "'q0': the served prompt's tokens changed at position 1" in verdict.diff
    assert "'q1': the answers agree for 1 tokens, then one ends (2 golden, 1 now)" in verdict.diff
    assert "'q2': not asked now" in verdict.diff and "'new': has no golden answer" in verdict.diff


def test_the_tolerance_follows_the_dtype_and_bf16_is_looser():
    assert tolerance_for("float32") == TOLERANCE["float32"] < tolerance_for("float32", "bfloat16")
    assert tolerance_for("bfloat16") == TOLERANCE["bfloat16"]


def test_the_reference_is_written_beside_the_exact_entries_and_read_back(tmp_path):
    path = tmp_path / "golden" / "r.json"
    ref = reference([10, 11, 3])
    write_golden(path, record("Paris"), AVX2, ref)
    assert read_reference(path) == ref and read_golden(path)[0]["environment"] == AVX2
    write_golden(path, record("Rome"), NEON)  # another environment's exact entry keeps the reference
    assert read_reference(path) == ref and len(read_golden(path)) == 2
    assert len(path.read_text(encoding="utf-8").splitlines()) < 60, "a reference answer is one line"


def test_a_truncated_reference_is_one_line_naming_the_question(tmp_path):
    path = tmp_path / "golden" / "r.json"
    ref = reference([10, 11, 3])
    del ref["answers"][0]["top_ids"][-1]
    path.parent.mkdir()
    path.write_text(json.dumps({"format": 3, "reference": ref, "entries": []}), encoding="utf-8")
    with pytest.raises(SftEvalError, match=r"r.json: reference answer 1 \('q0'\): `logprobs`, `top_ids` and"):
        read_reference(path)


# -- the default comparison on the session's real tuned model ---------------------------------------------------
@pytest.fixture
def mine(tiny_variant, sft_pipeline):
    """A pipeline of the shipped recipe named "mine" in a temporary folder (its golden file there), sharing the
    session's trained models."""
    return Pipeline(load_recipe(tiny_variant({'name = "tiny"': 'name = "mine"'})), cache=sft_pipeline.cache)


def test_a_recorded_reference_holds_and_an_edited_one_fails_naming_the_position(mine):
    """Recorded from the session's tuned model, then judged: the same model agrees (nothing moved); one golden
    token's logprob edited by 0.01 nats drifts at that position; a golden answer edited by one token drifts at
    its first divergence."""
    assert mine.golden(update=True).status == "recorded"
    path = golden_path(mine.recipe)
    same = mine.golden()
    assert same.status == "match", same
    largest = float(re.search(r"largest teacher-forced difference (\S+) nats", same.message).group(1))
    assert largest <= 5e-8, "the same model, scored again: only the file's rounding to 1e-7 nats differs"
    data = json.loads(path.read_text(encoding="utf-8"))
    first = data["reference"]["answers"][0]
    first["logprobs"][0] += 0.01
    path.write_text(json.dumps(data), encoding="utf-8")
    moved = mine.golden()
    assert moved.status == "drift" and moved.message.startswith("1 of 31"), moved
    assert f"{first['question']!r}: at answer position 0 the golden token" in moved.diff, moved.diff
    exact = mine.golden(mode="exact")
    assert exact.status == "match", "the exact entry of this environment is untouched"


def _recorded_under(path, **versions):
    """The golden file at `path` as if its reference had been recorded under other library `versions`."""
    data = json.loads(path.read_text(encoding="utf-8"))
    data["reference"]["environment"].update(versions)
    path.write_text(json.dumps(data), encoding="utf-8")
    return data


def test_a_reference_recorded_under_other_library_versions_is_compared_not_skipped(mine):
    """Issue 43: the model trained here under the reference's training numerics (device, kernel set) is the same
    model whatever the library versions: held to the reference within the tolerance (it was a skip, "another
    model", on every fresh install after a transformers patch release)."""
    assert mine.golden(update=True).status == "recorded"
    _recorded_under(golden_path(mine.recipe), transformers="5.0.0", torch="2.0.0")
    verdict = mine.golden()
    assert verdict.status == "match", verdict
    assert "within 0.001 nats" in verdict.message, verdict.message


def test_a_drift_after_an_upgrade_names_what_changed_and_how_to_record_again(mine):
    """The broken case of the rule above: one golden logprob edited by 0.01 nats under a reference recorded with
    another transformers is drift (not a skip), and the message says what changed around it."""
    assert mine.golden(update=True).status == "recorded"
    data = _recorded_under(golden_path(mine.recipe), transformers="5.0.0")
    data["reference"]["answers"][0]["logprobs"][0] += 0.01
    golden_path(mine.recipe).write_text(json.dumps(data), encoding="utf-8")
    now = environment(str(mine.device))["transformers"]
    verdict = mine.golden()
    assert verdict.status == "drift" and verdict.message.startswith("1 of 31"), verdict
    assert f"since it was recorded: transformers 5.0.0 -> {now}" in verdict.message, verdict.message
    assert f"--sft-recipe {mine.recipe.path} -k golden --sft-update-golden" in verdict.message, verdict.message


def test_a_reference_trained_under_another_kernel_set_is_another_model_and_says_why(mine, tmp_path):
    """Other training numerics (here the kernel set) are another model: the check falls back to this environment's
    exact entry or a local baseline, and its message names the difference."""
    assert mine.golden(update=True).status == "recorded"
    path = golden_path(mine.recipe)
    data = json.loads(path.read_text(encoding="utf-8"))
    kernels = data["reference"]["environment"]["kernels"]
    data["reference"]["environment"]["kernels"] = "AVX512" if kernels != "AVX512" else "DEFAULT"
    data["entries"] = []  # no exact entry of this environment either: a local baseline
    path.write_text(json.dumps(data), encoding="utf-8")
    verdict = mine.golden()
    assert verdict.status == "baseline", verdict
    moved = f"kernels {data['reference']['environment']['kernels']} -> {kernels}"
    assert f"other training numerics ({moved}" in verdict.message, verdict.message


def test_the_base_models_answers_drift_from_the_tuned_reference(mine, sft_evaluation):
    """A reference recorded from another real model (the base) fails every question, within the tolerance or
    not: the tuned model's logprobs of the base's answers are nowhere near the base's."""
    base = sft_evaluation.base
    asked, ids = [a.question for a in base], [a.token_ids for a in base]
    prompts, scores, dtype = mine.teacher_forced.answer_top_k("base", asked, ids, TOP_K)
    env = environment(str(mine.device))
    write_golden(
        golden_path(mine.recipe), golden_record(base), env, reference_record(base, prompts, scores, dtype, env)
    )
    verdict = mine.golden()
    assert verdict.status == "drift" and verdict.message.startswith("31 of 31"), verdict


INFERENCE_PROBE = """
import json, sys
from transformers import AutoModelForCausalLM, AutoTokenizer
from sft_eval.generation.local import generate
from sft_eval.scoring import IGNORE, Scored, score_top_k
folder, reference = sys.argv[1], json.load(open(sys.argv[2]))["reference"]
tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder).eval()
golden = reference["answers"]
answers = generate(model, tokenizer, [g["question"] for g in golden], max_new_tokens=100)
scores = score_top_k(model, [Scored(g["prompt_ids"] + g["token_ids"], [IGNORE] * len(g["prompt_ids"]) + g["token_ids"])
                             for g in golden])
print(json.dumps({"answers": [a.token_ids for a in answers], "scores": [list(s.__dict__.values()) for s in scores]}))
"""


def test_the_same_weights_under_another_kernel_set_agree_within_the_tolerance(mine, sft_pipeline, cli, tmp_path):
    """Inference drift, for real: the session's tuned weights answer and score in a second process with ATen's
    portable kernels (`ATEN_CPU_CAPABILITY=default`, as a CPU without AVX computes), and are held to the reference
    recorded here. Bit-exact comparison would flag it; the tolerance does not."""
    assert mine.golden(update=True).status == "recorded"
    path = golden_path(mine.recipe)
    ref = read_reference(path)
    probe = subprocess.run(
        [sys.executable, "-c", INFERENCE_PROBE, str(sft_pipeline.tuned_model_dir), str(path)],
        capture_output=True,
        text=True,
        env=cli.environ(ATEN_CPU_CAPABILITY="default"),
        timeout=cli.hang_guard_s,
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    other = json.loads(probe.stdout.strip().splitlines()[-1])
    golden = ref["answers"]
    answers = [
        Answer(g["question"], "", "", ids, len(ids), "eos") for g, ids in zip(golden, other["answers"], strict=True)
    ]
    scores = [TopK(*s) for s in other["scores"]]
    prompts = [g["prompt_ids"] for g in golden]
    differences = [
        abs(a - b) for g, s in zip(golden, scores, strict=True) for a, b in zip(g["logprobs"], s.logprobs, strict=True)
    ]
    assert max(differences) > 0, "the portable kernels computed the same bits: this test shows nothing here"
    verdict = within_tolerance(ref, answers, prompts, scores, TOLERANCE["float32"])
    assert verdict.status == "match", f"{verdict.message}\n{verdict.diff}"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('golden_mode = "bits"', "`eval.golden_mode` must be one of 'tolerance', 'exact', not 'bits'"),
        ("golden_tolerance = 0", "`eval.golden_tolerance` must be a number above 0 (nats), not 0"),
        ("golden_tolerance = nan", "`eval.golden_tolerance` must be a number above 0 (nats), not nan"),
    ],
    ids=["unknown-mode", "zero-tolerance", "nan-tolerance"],
)
def test_a_bad_golden_mode_or_tolerance_is_one_line(tmp_path, line, message):
    text = f'name = "x"\n[data]\ntrain = "rows.jsonl"\n[eval]\nquestions = ["Hi"]\n{line}\n'
    (tmp_path / "r.toml").write_text(text, encoding="utf-8")
    with pytest.raises(SftEvalError, match=re.escape(message)):
        load_recipe(tmp_path / "r.toml")
    (tmp_path / "r.toml").write_text(text.replace(line, 'golden_mode = "exact"\ngolden_tolerance = 0.01'))
    assert load_recipe(tmp_path / "r.toml").eval.golden_mode == "exact"


# -- a run trained elsewhere: its weights are fixed, so its golden holds on any kernel set -----------------------
DATA = FIXTURES_DIR / "data"


@pytest.fixture
def elsewhere(tmp_path, sft_pipeline):
    """`elsewhere(**model_keys)`: a recipe judging the session's tuned model as a run trained elsewhere (a user's
    folder: `model.base` the session's base, `model.tuned` the tuned model's folder, the tokenizer and its
    template from there), with `[model]` keys replaced; always the same recipe file, so the same golden file."""

    def write(**model: str) -> Path:
        keys = {
            "base": str(sft_pipeline.base_model_dir),
            "tokenizer": str(sft_pipeline.tuned_model_dir),
            "tuned": str(sft_pipeline.tuned_model_dir),
            **model,
        }
        lines = "\n".join(f'{k} = "{v}"' for k, v in keys.items())
        path = tmp_path / "proj" / "recipe.toml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(
            f'name = "elsewhere"\n[model]\n{lines}\n[data]\ntrain = "{DATA / "sft_train.jsonl"}"\n'
            f'[eval]\nquestions_file = "{DATA / "eval_questions.jsonl"}"\n',
            encoding="utf-8",
        )
        return path

    return write


@pytest.mark.slow  # pytest in three fresh processes, one per kernel set this CPU runs
def test_a_finished_runs_golden_recorded_here_passes_under_another_kernel_set(elsewhere, sft_pipeline, cli):
    """Recorded once with this machine's kernels, then `pytest suites/test_golden.py` in a fresh process with ATen's
    portable kernels (a CPU without AVX, as far as ATen is concerned): the same weights, other float results,
    and the test passes, not skips."""
    recipe = elsewhere()

    def run(**env: str) -> subprocess.CompletedProcess:
        return cli.pytest(
            str(SUITES / "test_golden.py"),
            "-rA",
            f"--sft-recipe={recipe}",
            f"--sft-cache={sft_pipeline.cache.root}",
            *(["--sft-update-golden"] if env.pop("update", "") else []),
            cwd=recipe.parent,
            env=env,
        )

    assert run(update="yes").returncode == 0
    flags = Path("/proc/cpuinfo").read_text(encoding="utf-8") if Path("/proc/cpuinfo").is_file() else ""
    for kernels in ("default", "avx2", *(["avx512"] if " avx512f" in flags else [])):  # each one this CPU can run
        result = run(ATEN_CPU_CAPABILITY=kernels)
        assert result.returncode == 0 and "1 passed" in result.stdout, (kernels, result.stdout[-3000:])


def test_one_whitespace_in_the_template_is_drift(elsewhere, sft_pipeline, tmp_path):
    """The tuned model's own template with one space added after the assistant header: every served prompt
    changes, and each question says so."""
    recorded = Pipeline(load_recipe(elsewhere()), cache=sft_pipeline.cache)
    assert recorded.golden(update=True).status == "recorded"
    template = recorded.tokenizer.chat_template
    assert "assistant\\n" in template, template  # the Jinja source spells the newline as an escape
    changed = tmp_path / "spaced.jinja"
    changed.write_text(template.replace("assistant\\n", "assistant \\n"), encoding="utf-8")
    verdict = Pipeline(load_recipe(elsewhere(chat_template=str(changed))), cache=sft_pipeline.cache).golden()
    assert verdict.status == "drift" and re.match(r"(\d+) of \1 tuned answers drifted", verdict.message), verdict
    assert "the served prompt's tokens changed at position" in verdict.diff


def test_another_tokenizer_is_drift(elsewhere, sft_pipeline, tiny_variant):
    """The tiny tokenizer trained on other rows (the held-out file): same size, other merges, so other ids."""
    recorded = Pipeline(load_recipe(elsewhere()), cache=sft_pipeline.cache)
    assert recorded.golden(update=True).status == "recorded"
    other = Pipeline(load_recipe(tiny_variant({"sft_train.jsonl": "sft_heldout.jsonl"})), cache=sft_pipeline.cache)
    folder, _ = other.artifacts.tokenizer_entry
    assert folder is not None and len(other.tokenizer) <= len(recorded.tokenizer), "ids must stay in the model's range"
    verdict = Pipeline(load_recipe(elsewhere(tokenizer=str(folder))), cache=sft_pipeline.cache).golden()
    assert verdict.status == "drift" and "the served prompt's tokens changed" in verdict.diff, verdict
