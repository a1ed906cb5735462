"""Judges of open-ended answers: is the candidate's answer better than the other's where no reference exists?

`stats` turns pairwise verdicts into a win rate a reviewer can trust (paired interval, sign test, order effects,
length control, agreement with reference metrics); `chat` asks a chat model, MT-Bench's way, in both orders.
"""
