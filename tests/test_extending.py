"""docs/extending.md: a backend, an audit check and a report section, each added through its documented route
by a toy one, and shown to take effect (and, where it can, to fire on a broken case and stay quiet on a correct one).
"""

from __future__ import annotations

import dataclasses
import json
import re
import textwrap

import pytest

from sft_eval import report
from sft_eval.audit import Finding, register_check
from sft_eval.chat import shipped_templates
from sft_eval.errors import SftEvalError
from sft_eval.generation import GenerationSettings, backend_names, register_backend
from sft_eval.pipeline import Pipeline
from sft_eval.records import Answer
from sft_eval.report import Section, register_section, render_html, render_json, write_report


class Shouting:
    """A toy backend: answers each question with the question in capitals, and says which model it stood for."""

    def __init__(self, which: str):
        self.which = which

    def answer(self, questions: list[str], settings: GenerationSettings) -> list[Answer]:
        return [
            Answer(
                question=q,
                text=f"{self.which}: {q.upper()}",
                raw=q.upper(),
                token_ids=[],
                new_tokens=1,
                stop_reason="eos",
            )
            for q in questions
        ]


def _with_backend(pipeline: Pipeline, name: str) -> Pipeline:
    recipe = dataclasses.replace(pipeline.recipe, eval=dataclasses.replace(pipeline.recipe.eval, backend=name))
    return Pipeline(recipe, pipeline.cache, str(pipeline.device))


def test_a_registered_backend_answers_the_evaluation(registered, sft_pipeline):
    register_backend("shouting", lambda target, eval_settings: Shouting(target.which))
    evaluation = _with_backend(sft_pipeline, "shouting").evaluation
    assert [r.tuned.text for r in evaluation.records] == [f"tuned: {q.question.upper()}" for q in evaluation.questions]
    assert [r.base.text for r in evaluation.records] == [f"base: {q.question.upper()}" for q in evaluation.questions]
    assert all(r.tuned_score.stopped_at_eos and r.tuned_score.answer == r.tuned.text for r in evaluation.records)


def test_a_backend_that_answers_too_few_questions_is_one_line(registered, sft_pipeline):
    class Forgetful(Shouting):
        def answer(self, questions, settings):
            return super().answer(questions[:-1], settings)

    register_backend("forgetful", lambda target, eval_settings: Forgetful(target.which))
    with pytest.raises(SftEvalError, match=r"^eval.backend: 31 questions but 30 answers$"):
        _with_backend(sft_pipeline, "forgetful").evaluation  # noqa: B018 - the property is what is tested


def test_a_backend_nobody_registered_is_bad_input(registered, sft_pipeline, tiny_variant, cli):
    with pytest.raises(Exception, match="`eval.backend` must be one of transformers, openai, not 'shouting'"):
        _with_backend(sft_pipeline, "shouting")
    recipe = tiny_variant({"[eval]\n": '[eval]\nbackend = "shouting"\n'})
    cli.bad_input(cli.run("audit", "--recipe", str(recipe)), str(recipe), "eval.backend", "'shouting'")


def test_a_class_that_is_no_backend_is_refused_at_registration_in_one_line(registered):
    """A backend class is checked against the `Backend` interface when it is registered: no `answer`, or a member
    declared as something else, is one ValueError naming the class and what is wrong. A class with `answer` alone
    (Shouting) is a backend: the rest has defaults."""

    class Mute:
        def identity(self):
            return None

    class Confused(Shouting):
        identity = {"backend": "confused"}  # a dict where a method belongs

    with pytest.raises(ValueError, match=r"^backend 'mute': Mute is not a backend: it has no `answer\(questions"):
        register_backend("mute", Mute)
    with pytest.raises(ValueError, match=r"^backend 'confused': Confused is not a backend: its identity is not a"):
        register_backend("confused", Confused)
    register_backend("shouting", Shouting)  # quiet: answer is all a backend needs
    assert "mute" not in backend_names() and "shouting" in backend_names()


def test_a_factory_that_builds_no_backend_is_one_line_and_a_partial_one_gets_the_defaults(registered, sft_pipeline):
    """A function factory is checked when it builds: what it built without `answer` is one line naming the backend
    and the type; a backend with `answer` alone is completed with `BackendBase`'s defaults (not in process, its
    answers not cached, tool items refused in one line)."""
    register_backend("nothing", lambda target, settings: object())
    with pytest.raises(SftEvalError, match=r"^eval.backend: the backend 'nothing' built object, and it has no `answer"):
        _with_backend(sft_pipeline, "nothing").answers("tuned")
    register_backend("shouting", lambda target, settings: Shouting(target.which))
    answering = _with_backend(sft_pipeline, "shouting").answering
    backend = answering.backend("tuned")
    assert backend.in_process is False and backend.identity() is None and backend.on_answer is None
    with pytest.raises(SftEvalError, match=r"^eval.tool_items: the backend Shouting answers questions but not tool"):
        backend.answer_tools([], GenerationSettings())


@pytest.mark.slow
def test_a_backend_registered_in_a_users_conftest_runs_in_their_suite(tmp_path, sft_pipeline, tiny_variant, cli):
    """The route a user takes: `register_backend` in their conftest.py, `eval.backend` in their recipe."""
    recipe = tiny_variant({"[eval]\n": '[eval]\nbackend = "shouting"\n'})
    (tmp_path / "conftest.py").write_text(
        textwrap.dedent(
            """
            from sft_eval.generation import register_backend
            from sft_eval.records import Answer

            class Shouting:
                def answer(self, questions, settings):
                    return [Answer(q, q.upper(), q.upper(), [], 1, "eos") for q in questions]

            register_backend("shouting", lambda target, eval_settings: Shouting())
            """
        ),
        encoding="utf-8",
    )
    (tmp_path / "test_answers.py").write_text(
        "def test_shouted(sft_evaluation):\n"
        "    assert all(a.text == a.question.upper() for a in sft_evaluation.tuned)\n",
        encoding="utf-8",
    )
    result = cli.pytest(
        "-q", f"--sft-recipe={recipe}", f"--sft-cache={sft_pipeline.cache.root}", "--sft-report-dir=out", cwd=tmp_path
    )
    assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout[-3000:] + result.stderr[-2000:]
    written = json.loads((tmp_path / "out" / report.JSON_NAME).read_text(encoding="utf-8"))
    assert all(c["tuned"]["text"] == c["question"].upper() for c in written["cards"])


def _no_system_turn(tokenizer) -> list[Finding]:
    """A toy team rule: the chat template must render a system turn it is given."""
    text = tokenizer.apply_chat_template(
        [{"role": "system", "content": "SYSTEM-MARK"}, {"role": "user", "content": "hi"}], tokenize=False
    )
    if "SYSTEM-MARK" in text:
        return []
    return [Finding("myteam.system_turn", "error", "the template drops the system message", text[:80])]


def test_a_registered_check_runs_in_the_audit_and_can_fire(registered, sft_pipeline, tmp_path):
    register_check("myteam.system_turn", _no_system_turn)
    quiet = sft_pipeline.audit(template=str(shipped_templates()["chatml"]))
    assert "myteam.system_turn" not in {f.check for f in quiet}
    dropping = tmp_path / "drops_system.jinja"
    dropping.write_text(
        "{% for m in messages %}{% if m.role != 'system' %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
        "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
        encoding="utf-8",
    )
    fired = [f for f in sft_pipeline.audit(template=str(dropping)) if f.check == "myteam.system_turn"]
    assert [f.severity for f in fired] == ["error"], fired


def test_a_check_that_raises_is_a_finding_and_ids_stay_honest(registered, sft_pipeline):
    def broken(tokenizer):
        raise KeyError("no such thing")

    register_check("myteam.broken", broken)
    findings = sft_pipeline.audit(template=str(shipped_templates()["chatml"]))
    assert [f.severity for f in findings if f.check == "myteam.broken"] == ["error"]
    with pytest.raises(ValueError, match="built-in"):
        register_check("template.prefix", broken)
    with pytest.raises(ValueError, match="unknown finding id"):
        Finding("myteam.typo", "error", "an id nobody registered")


def test_a_registered_section_is_rendered_and_survives_the_json(registered, sft_pipeline, tmp_path):
    register_section(
        Section(
            "toy", "Toy: longest tuned answer", "<p>{{ cards | map(attribute='tuned.new_tokens') | max }} tokens</p>"
        )
    )
    context = sft_pipeline.report_context()
    longest = max(r.tuned.new_tokens for r in sft_pipeline.evaluation.records)
    html = render_html(context)
    assert f'<section id="toy">\n<h2>Toy: longest tuned answer</h2>\n<p>{longest} tokens</p>' in html
    write_report(context, tmp_path / "first")
    again = render_json(tmp_path / "first" / report.JSON_NAME, tmp_path / "again").read_text(encoding="utf-8")
    assert again == (tmp_path / "first" / report.HTML_NAME).read_text(encoding="utf-8")


# -- one registry type, one collision rule ----------------------------------------------------------------------
def _toy_check(tokenizer):
    return []


@pytest.mark.parametrize(
    ("register", "taken_by"),
    [
        (lambda: register_backend("transformers", lambda t, s: Shouting(t.which)), "sft-eval (built in)"),
        (lambda: register_check("template.prefix", _toy_check), "a built-in finding id"),
        (lambda: register_section(Section("summary", "Mine", "<p>x</p>")), "a built-in report section"),
    ],
    ids=["backend", "check", "section"],
)
def test_a_built_in_name_cannot_be_taken_and_the_error_names_both_owners(registered, register, taken_by):
    with pytest.raises(ValueError, match=re.escape(f"is taken by {taken_by}; tests.test_extending cannot take it too")):
        register()


@pytest.mark.parametrize(
    "register",
    [
        lambda: register_backend("shouting", lambda t, s: Shouting(t.which)),
        lambda: register_check("myteam.system_turn", _toy_check),
        lambda: register_section(Section("toy", "Toy", "<p>x</p>")),
    ],
    ids=["backend", "check", "section"],
)
def test_a_second_registration_of_a_name_is_an_error_not_a_silent_replacement(registered, register):
    """Before one registry type, a second backend silently replaced the first (shipped ones included) and a second
    section replaced the first by id; now every clash is one error naming who holds the name."""
    register()
    with pytest.raises(ValueError, match=r"is taken by tests\.test_extending; tests\.test_extending cannot take it"):
        register()


def test_a_misspelt_backend_is_one_line_with_the_close_match(registered, tiny_variant, cli):
    register_backend("shouting", lambda t, s: Shouting(t.which))
    from sft_eval.backends import check_backend

    with pytest.raises(SftEvalError, match=r"not 'shoutng' \(did you mean 'shouting'\?\)$"):
        check_backend("shoutng", "r.toml")
    recipe = tiny_variant({"[eval]\n": '[eval]\nbackend = "transformer"\n'})
    result = cli.run("audit", "--recipe", str(recipe))
    cli.bad_input(result, str(recipe), "eval.backend", "(did you mean 'transformers'?)")


def test_the_reserved_section_ids_are_the_report_templates_own():
    """The built-in sections the registry reserves are exactly the `<section id>`s report.html.j2 writes."""
    import re
    from pathlib import Path

    template = (Path(report.__file__).parent / "templates" / "report.html.j2").read_text(encoding="utf-8")
    assert set(re.findall(r'<section id="(\w[\w-]*)">', template)) == set(report.BUILT_IN_SECTIONS)


def test_an_installed_packages_entry_point_taking_a_shipped_name_is_one_line(monkeypatch):
    """Two packages (or a package and sft-eval) claiming one backend name: bad input, said once, exit 2 in the CLI
    (an SftEvalError), rather than one silently winning."""
    from importlib.metadata import EntryPoint

    from sft_eval import registry

    point = EntryPoint(name="openai", value="theirs:factory", group="sft_eval.backends")
    monkeypatch.setattr(registry, "entry_points", lambda group: [point])
    fresh = registry.Registry("backend", builtin={"openai": "x:y"}, entry_point_group="sft_eval.backends")
    with pytest.raises(SftEvalError, match=re.escape("backend 'openai' is taken by sft-eval (built in); the entry")):
        fresh.names()
