"""The math checker on a table of real-looking model outputs."""

from __future__ import annotations

import sys
import threading

import pytest

from leaf.data.records import Sample
from leaf.checkers import get_checker
from leaf.checkers.math import extract_answer, last_boxed

# (gold answer, model output, judged correct?)
CASES = [
    # GSM8K style
    ("72", "Natalia sold 48/2 = 24 clips in May.\nAltogether she sold 48+24 = 72 clips.\n#### 72", True),
    ("72", "She sold 48 + 24 = 72 clips in total.\n#### 74", False),
    ("18", "Janet makes 9 * 2 = $18 every day. The answer is $18.", True),
    ("18", "So she earns 18 dollars. The answer is 18 dollars.", True),
    ("1000", "The total cost is $1,000. The answer is 1,000.", True),
    ("1000", "The answer is 10,000.", False),
    # thousands separators with a unit word or a currency sign
    ("1080", "He pays 1,080 dollars in total. The answer is 1,080 dollars.", True),
    ("1080", "The answer is $1,080.", True),
    ("1080", "The answer is 1,080 km", True),
    ("-1234.5", "The answer is -1,234.5 units.", True),
    ("1080", "The answer is 1,008 dollars.", False),
    ("1080", "The answer is 10,800 km", False),
    ("5", "Each box holds 5 apples, so the answer is: 5", True),
    ("5", "First 2+3=5 apples, but then he eats one, so the answer is 4.", False),
    ("-3", "The temperature dropped to \\boxed{-3} degrees.", True),
    ("-3", "The change is \\boxed{3}.", False),
    # fractions vs decimals
    ("\\frac{1}{2}", "The probability is \\boxed{0.5}.", True),
    ("0.5", "So the probability is \\boxed{\\frac{1}{2}}.", True),
    ("\\frac{1}{3}", "The answer is \\boxed{0.33}.", False),
    ("\\frac{3}{4}", "Thus we get \\boxed{\\dfrac{3}{4}}", True),
    ("\\frac{3}{4}", "Thus we get \\boxed{\\frac{4}{3}}", False),
    ("2.5", "The final answer is $\\frac{5}{2}$.", True),
    ("1.25", "Hence x = \\boxed{1\\frac{1}{4}}", True),
    # nested braces
    ("\\frac{\\sqrt{3}}{2}", "We find $\\sin 60^\\circ = \\boxed{\\frac{\\sqrt{3}}{2}}$.", True),
    ("\\frac{\\sqrt{3}}{2}", "We find \\boxed{\\frac{\\sqrt{2}}{2}}.", False),
    ("2^{10}", "The count is \\boxed{{2}^{10}}", True),
    ("1024", "There are \\boxed{2^{10}} subsets.", True),
    ("\\sqrt{2}", "First guess \\boxed{2}, but checking again the answer is \\boxed{\\sqrt{2}}.", True),
    ("2", "First guess \\boxed{2}, but checking again the answer is \\boxed{\\sqrt{2}}.", False),
    # units and angles
    ("5", "The side length is \\boxed{5\\text{ cm}}.", True),
    ("90", "The angle is \\boxed{90^\\circ}.", True),
    ("12", "The area is \\boxed{12 \\text{ square units}}", True),
    ("12", "The area is \\boxed{21 \\text{ square units}}", False),
    # intervals
    ("[1, 2)", "The solution set is \\boxed{[1,2)}.", True),
    ("[1, 2)", "The solution set is \\boxed{(1,2)}.", False),
    ("(-\\infty, 3]", "So $x$ lies in \\boxed{(-\\infty,3]}", True),
    ("(-\\infty, 3]", "So $x$ lies in \\boxed{(-\\infty,3)}", False),
    ("(2, \\infty)", "The range is \\boxed{(2,\\infty)}", True),
    # sets and lists of roots
    ("\\{1, 2, 3\\}", "The roots are \\boxed{\\{3, 1, 2\\}}", True),
    ("1, 2", "The solutions are $x = 1$ and $x = 2$, so \\boxed{2, 1}.", True),
    ("1, 2", "The solutions are \\boxed{1, 3}.", False),
    ("\\{-1, 1\\}", "Therefore \\boxed{\\{1, -1\\}}.", True),
    # expressions, equations
    ("x^2 + 2x + 1", "Expanding gives \\boxed{(x+1)^2}.", True),
    ("x^2 + 2x + 1", "Expanding gives \\boxed{(x-1)^2}.", False),
    ("3", "Solving, we obtain \\boxed{x = 3}.", True),
    ("\\pi", "The area is \\boxed{\\pi}.", True),
    ("2\\pi", "The circumference is \\boxed{\\pi}.", False),
    ("10\\%", "The rate increased by \\boxed{10\\%}.", True),
    ("\\text{(B)}", "Comparing the options, the answer is \\boxed{\\text{(B)}}.", True),
    # no explicit marker: math-verify reads the last expression
    ("7", "Adding the two gives 3 + 4 = 7", True),
    ("7", "Adding the two gives 3 + 5 = 8", False),
    # wrong answers that look right
    ("144", "12 squared is 144, and the answer is \\boxed{1444}.", False),
    ("0.75", "The answer is 0.57.", False),
    ("\\frac{1}{4}", "The answer is \\boxed{\\frac{1}{4}x}", False),
    ("", "I could not solve this.", None),  # no gold: a clear error, not a silent mark
]


@pytest.fixture(scope="module")
def checker():
    return get_checker("math")


def _sample(gold):
    return Sample(id=1, instruction="q", response="r", answer=gold)


@pytest.mark.parametrize(("gold", "output"), [(g, o) for g, o, ok in CASES if ok and g.lstrip("-").isdigit()])
def test_a_right_answer_is_wrong_against_another_gold(checker, gold, output):
    """Every integer case judged right turns wrong when the gold answer changes: the checker reads the answer."""
    assert checker.check(output, _sample(str(int(gold) + 7))) is False


@pytest.mark.parametrize(("gold", "output", "expected"), CASES)
def test_math_cases(checker, gold, output, expected):
    if expected is None:
        with pytest.raises(ValueError, match="no gold answer"):
            checker.check(output, Sample(id=1, instruction="q", response="no marker"))
        return
    assert checker.check(output, _sample(gold)) is expected


def test_gold_from_response_when_no_answer(checker):
    s = Sample(id=1, instruction="q", response="48 + 24 = 72\n#### 72")
    assert checker.check("The answer is 72", s)
    assert not checker.check("The answer is 27", s)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\\boxed{\\frac{a}{b^{2}}}", "\\frac{a}{b^{2}}"),
        ("first \\boxed{1} then \\boxed{{2}}", "{2}"),
        ("\\boxed 5 is it", "5"),
        ("unbalanced \\boxed{1", None),
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


def test_extract_answer_markers():
    assert extract_answer("so #### 1,234") == "1234"
    assert extract_answer("The answer is $\\frac{1}{2}$.") == "\\frac{1}{2}"
    assert extract_answer("Final answer: **42**") == "42"
    assert extract_answer("no marker here") is None


def test_works_off_the_main_thread(checker):
    """math-verify's SIGALRM cannot be used in a thread; the checker must still answer (via a process)."""
    results = {}

    def work():
        results["right"] = checker.check("\\boxed{0.5}", _sample("\\frac{1}{2}"))
        results["wrong"] = checker.check("\\boxed{0.6}", _sample("\\frac{1}{2}"))

    t = threading.Thread(target=work)
    t.start()
    t.join(timeout=120)
    assert not t.is_alive()
    assert results == {"right": True, "wrong": False}


def test_pathological_expression_times_out_instead_of_hanging():
    import time

    from leaf.checkers.math import MathChecker

    t0 = time.monotonic()
    assert not MathChecker(timeout=1).check("\\boxed{9^{9^{9^{9^{9}}}}}", _sample("1"))
    assert time.monotonic() - t0 < 20


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is 1,080 dollars.", "1080"),
        ("The answer is $1,080.", "1080"),
        ("The answer is 1,080 km", "1080"),
        ("The answer is -1,234.5 units.", "-1234.5"),
        ("The answer is 18 dollars.", "18"),
        ("The answer is 1,2,3.", "1,2,3"),  # not a thousands separator: a list stays a list
    ],
)
def test_thousands_and_units_are_cleaned(text, expected):
    assert extract_answer(text) == expected


def test_missing_math_verify_is_a_one_line_error(monkeypatch):
    from leaf.checkers import MissingExtra
    from leaf.checkers.math import MathChecker, judge

    monkeypatch.setitem(sys.modules, "math_verify", None)  # import math_verify -> ImportError
    with pytest.raises(MissingExtra, match=r"pip install 'math-verify>=0.7'") as info:
        MathChecker()
    assert "\n" not in str(info.value)
    with pytest.raises(MissingExtra, match="math-verify"):
        judge("1", "\\boxed{1}")


def test_a_checker_error_is_recorded_not_scored_wrong_silently(monkeypatch, caplog):
    import math_verify

    from leaf.checkers.math import MathChecker

    def boom(*args, **kwargs):
        raise RuntimeError("verify exploded")

    checker = MathChecker()
    monkeypatch.setattr(math_verify, "verify", boom)
    res = checker.run("\\boxed{2}", _sample("2"))
    assert res.status == "error" and not res.passed and "verify exploded" in res.detail
    assert checker.check("\\boxed{2}", _sample("2")) is False
    assert checker.last.status == "error" and checker.errors == 2
    assert "verify exploded" in caplog.text
    monkeypatch.undo()
    assert checker.run("\\boxed{2}", _sample("2")).status == "passed"


def test_last_answer_statement_wins():
    assert extract_answer("The answer is 3. Checking again, the answer is 4.") == "4"
