"""A report's judge record, read for `compare`: each card's verdict as a score, and whether two reports' verdicts
were made by the same judge (win rates from different judges are not comparable)."""

from __future__ import annotations

from sft_eval.errors import SftEvalError
from sft_eval.judge.stats import SCORE
from sft_eval.schema import ReportData


def judge_scores(context: ReportData) -> list[float | None]:
    """The report's judge verdicts as scores in its cards' order (None: no judge, or no verdict on that card)."""
    judge = context.get("judge")
    verdicts = judge["verdicts"] if judge else []
    scores: list[float | None] = [None] * len(context["cards"])
    for index, (card, verdict) in enumerate(zip(context["cards"], verdicts, strict=False)):
        if verdict["question"] == card["question"] and verdict["verdict"] is not None:
            scores[index] = SCORE[verdict["verdict"]]
    return scores


def same_judge(baseline: ReportData, candidate: ReportData, names: tuple[str, str]) -> None:
    """Nothing when both reports' verdicts come from the same judge (or either has none); otherwise one line: a
    win rate is only comparable between verdicts made by the same judge, with the same tie margin."""
    a, b = baseline.get("judge"), candidate.get("judge")
    if not a or not b:
        return
    first, second = ((j["kind"], j["judge"], j.get("tie_margin")) for j in (a, b))
    if first != second:
        raise SftEvalError(
            f"{names[1]}: its judge ({second[1]}, {second[0]}) is not {names[0]}'s ({first[1]}, {first[0]}): "
            "win rates from different judges are not comparable; judge both runs with one judge"
        )
