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
