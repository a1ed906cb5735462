"""My SFT run, checked with sft-eval's fixtures: `pytest --sft-recipe recipe.toml`."""


def test_the_recipe_audits_without_errors(sft_pipeline):
    errors = [f for f in sft_pipeline.findings if f.severity == "error"]
    assert not errors, [f"{f.check}: {f.message}" for f in errors]


def test_training_ran_the_planned_steps(sft_training_run):
    assert sft_training_run.global_step == sft_training_run.plan().optimizer_steps


def test_the_tuned_model_is_my_architecture(sft_tuned_model):
    assert (sft_tuned_model.config.hidden_size, sft_tuned_model.config.num_hidden_layers) == (576, 30)


def test_every_question_got_an_answer_within_budget(sft_evaluation, sft_recipe):
    for answer in sft_evaluation.tuned:
        assert 0 < answer.new_tokens <= sft_recipe.eval.max_new_tokens, answer
