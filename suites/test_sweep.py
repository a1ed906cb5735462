"""Which checkpoint to ship: with `--sft-sweep`, every checkpoint of the run `model.tuned` names is judged on the
recipe's questions (one model in memory at a time, answers cached per checkpoint), and `sweep.html` /
`sweep.json` go into the report folder. It fails on an error finding: eval_loss rising while the training loss
falls (`sweep.overfitting`), a recorded best checkpoint deleted (`sweep.best_missing`), the last checkpoint worse
than the best beyond noise (`sweep.last_worse`). `sft-eval sweep` is the same from a shell."""

from __future__ import annotations

import pytest

from sft_eval.plugin import option


def test_the_runs_checkpoints_hold_up(request, sft_pipeline):
    if not option(request.config, "sweep"):
        pytest.skip("no --sft-sweep: add it, with a recipe whose model.tuned is a run folder, to judge its checkpoints")
    from sft_eval.checkpoint_sweep import sweep_checkpoints
    from sft_eval.report import write_sweep

    result = sweep_checkpoints(sft_pipeline)
    page = write_sweep(result.to_dict(), option(request.config, "report-dir"))
    errors = [f for f in result.findings if f.severity == "error"]
    assert not errors, f"best: {result.best}; page: {page}\n" + "\n".join(f"{f.check}: {f.message}" for f in errors)
