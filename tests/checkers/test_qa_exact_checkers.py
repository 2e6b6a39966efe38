"""HotpotQA EM/F1 on hand-made cases worked out from the official rules; exact match."""

from __future__ import annotations

import pytest

from leaf.data.records import Sample
from leaf.checkers import get_checker
from leaf.checkers.qa import exact_match, extract_answer, f1_score, normalize_answer


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("The Eiffel Tower", "eiffel tower"),
        ("  an   apple, a pie!  ", "apple pie"),
        ("U.S.A.", "usa"),
        ("Theatre", "theatre"),  # "the" only as a whole word
        ("A-ha", "aha"),
        ("the the", ""),
    ],
)
def test_normalize(text, normalised):
    assert normalize_answer(text) == normalised


@pytest.mark.parametrize(
    ("pred", "gold", "em", "f1"),
    [
        ("the Eiffel Tower.", "Eiffel Tower", True, 1.0),
        # pred tokens: barack obama (2), gold: obama (1): P=1/2, R=1, F1=2/3
        ("Barack Obama", "Obama", False, 2 / 3),
        # pred: new york city (3), gold: city of new york (4): common new, york, city = 3 -> P=1, R=3/4, F1=6/7
        ("New York City", "City of New York", False, 6 / 7),
        ("yes", "yes", True, 1.0),
        ("yes", "no", False, 0.0),
        # yes/no rule: gold "yes" vs a longer prediction containing yes gets 0, not partial credit
        ("yes it is", "yes", False, 0.0),
        ("no", "no answer", False, 0.0),
        ("noanswer", "noanswer", True, 1.0),
        ("Paris", "London", False, 0.0),
        # repeated tokens count with multiplicity: pred "red red" gold "red": common 1, P=1/2, R=1
        ("red red", "red", False, 2 / 3),
        ("", "London", False, 0.0),
    ],
)
def test_em_f1(pred, gold, em, f1):
    assert exact_match(pred, gold) is em
    assert f1_score(pred, gold) == pytest.approx(f1)


def test_qa_checker_reads_the_stated_answer_and_aliases():
    qa = get_checker("qa")
    s = Sample(id=1, instruction="q", response="r", answer="Eiffel Tower", meta={"answer_aliases": ["La tour Eiffel"]})
    assert qa.check("Both facts point to Paris. So the answer is: the Eiffel Tower.", s)
    assert qa.check("Answer: La Tour Eiffel", s)
    assert not qa.check("The answer is the Louvre.", s)
    assert qa.f1("The answer is Eiffel", s) == pytest.approx(2 / 3)
    assert qa.check("Eiffel Tower\nbecause it is in Paris", s)  # no marker: first line
    assert extract_answer("**Answer:** yes") == "yes"


@pytest.mark.parametrize(
    ("pred", "gold", "ok"),
    [
        ("The answer is 17.", "17", True),
        ("Reasoning... The answer is  Blue Whale", "blue whale", True),
        ("The answer is 17. Then the answer is 18.", "17", False),  # the last statement counts
        ("17", "17", True),
        ("value 17", "17", False),
        ('The answer is "cat".', "cat", True),
    ],
)
def test_exact(pred, gold, ok):
    s = Sample(id=1, instruction="q", response="r", answer=gold)
    assert get_checker("exact").check(pred, s) is ok


def test_unknown_task():
    with pytest.raises(ValueError, match="unknown task"):
        get_checker("poetry")


def test_last_statement_wins():
    from leaf.checkers.exact import normalize

    assert normalize("The answer is 17. Then the answer is 18.") == "18"
    assert extract_answer("answer: Paris, no wait, the answer is Lyon") == "Lyon"


def test_answer_pattern_reads_answers_where_the_task_puts_them():
    from leaf.checkers import checker_for, check_answer_pattern

    checker = checker_for("exact", answer_pattern=r"answer\s+(-?\d+)")
    with_answer = Sample(id=1, instruction="q", response="r", answer="7")
    from_response = Sample(id=2, instruction="q", response="3 + 4 gives answer 7", answer=None)
    for sample in (with_answer, from_response):
        assert checker.check("so, answer 7", sample) is True
        assert checker.check("answer 2, no wait, answer 7", sample) is True  # the last match counts
        assert checker.check("The answer is 7.", sample) is False  # no match: wrong, not guessed
        assert checker.check("answer 8", sample) is False
    # the default rule would have scored the user's format wrong: the pattern is what makes it right
    assert checker_for("exact").check("so, answer 7", with_answer) is False
    with pytest.raises(ValueError, match="needs an 'answer' .or a match of --answer-pattern"):
        checker.check("answer 7", Sample(id=3, instruction="q", response="no number here"))
    for bad, why in (("answer (\\d+) (\\d+)", "exactly one group"), ("answer (", "not a regular expression")):
        with pytest.raises(ValueError, match=why):
            check_answer_pattern("exact", bad)
    with pytest.raises(ValueError, match="applies to --task exact, not math"):
        check_answer_pattern("math", r"(\d+)")
