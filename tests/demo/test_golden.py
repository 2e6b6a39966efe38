"""The recorded-run comparison itself: it passes the recorded run and catches what a regression would change."""

from __future__ import annotations

import copy

from .golden import differences, load_golden


def test_the_recorded_run_equals_itself_and_changes_are_caught():
    golden = load_golden()
    assert differences(golden, golden) == []
    changed = copy.deepcopy(golden)
    det = changed["files"]["seed-0/det_gradient.jsonl"]
    det[0]["tokens"][0]["flag"] = not det[0]["tokens"][0]["flag"]  # a flag
    det[1]["tokens"][0]["g_teacher"] *= 1.5  # a saliency far beyond float noise
    det[2]["spans"] = det[2]["spans"] + [[0, 1]]  # a span
    changed["seeds"][0]["accuracy"]["kd"]["clean"] += 0.04  # a number of the results
    found = differences(golden, changed)
    assert any(".tokens[0].flag" in f for f in found) and any(".tokens[0].g_teacher" in f for f in found)
    assert any("[2].spans" in f for f in found) and "results: seeds differs" in found
    noise = copy.deepcopy(golden)
    noise["files"]["seed-0/det_gradient.jsonl"][1]["tokens"][0]["g_teacher"] *= 1 + 1e-6
    assert differences(golden, noise) == []  # float noise is not a change of result
