"""My SFT run, checked with sft-eval's fixtures: `pytest --recipe recipe.toml`."""


def test_the_recipe_audits_without_errors(sft_pipeline):
    errors = [f for f in sft_pipeline.findings if f.severity == "error"]
    assert not errors, [f"{f.check}: {f.message}" for f in errors]


def test_training_ran_the_planned_steps(training_run):
    assert training_run.global_step == training_run.plan().optimizer_steps


def test_the_tuned_model_is_my_architecture(tuned_model):
    assert (tuned_model.config.hidden_size, tuned_model.config.num_hidden_layers) == (576, 30)


def test_every_question_got_an_answer_within_budget(evaluation, recipe):
    for answer in evaluation.tuned:
        assert 0 < answer.new_tokens <= recipe.eval.max_new_tokens, answer
