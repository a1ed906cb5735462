"""What the recipe's own trainer trains: the answers and their end-of-turn tokens, and nothing else."""

from __future__ import annotations


def errors(audit_of, check):
    return [f for f in audit_of("recipe") if f.check == check and f.severity == "error"]


def test_every_row_ends_its_trainable_labels_on_the_end_of_turn_token(audit_of):
    found = errors(audit_of, "labels.eos")
    assert not found, f"{found[0].message}\n  evidence: {found[0].evidence}"


def test_only_assistant_turns_are_trained_and_all_of_them_are(audit_of):
    found = errors(audit_of, "labels.scope")
    assert not found, "\n".join(f"{f.message} ({f.evidence})" for f in found)


def test_packed_rows_train_as_if_alone(audit_of):
    """Only with `sft.packing`: each packed row predicts as it does alone and is not trained across the seam."""
    found = errors(audit_of, "labels.packing")
    assert not found, "\n".join(f"{f.message} ({f.evidence})" for f in found)


def test_the_models_vocabulary_fits_the_tokenizer(audit_of):
    """The base checkpoint's embedding has a row for every token id and the template's tokens (checkpoint.vocab)."""
    found = errors(audit_of, "checkpoint.vocab")
    assert not found, f"{found[0].message}\n  evidence: {found[0].evidence}"


def test_the_templates_special_tokens_have_trained_rows(audit_of):
    """Warnings too: an end-of-turn token whose embedding row was never trained (checkpoint.untrained_tokens) is
    learned by full fine-tuning at best, and never by a run that freezes the embeddings."""
    found = [f for f in audit_of("recipe") if f.check == "checkpoint.untrained_tokens"]
    assert not found, f"{found[0].message}\n  evidence: {found[0].evidence}"
