import pytest

from awares.evaluate import anls, exact_match, normalize


def test_normalize():
    assert normalize("  The Red, circle! ") == "red circle"


@pytest.mark.parametrize(
    "pred, answers, expected",
    [("Red.", ["red"], 1.0), ("47", ["47"], 1.0), ("blue", ["red", "blue"], 1.0), ("4", ["47"], 0.0)],
)
def test_exact_match(pred, answers, expected):
    assert exact_match(pred, answers) == expected


def test_anls():
    assert anls("invoice 1234", ["invoice 1234"]) == 1.0
    assert anls("invoice 1235", ["invoice 1234"]) == pytest.approx(1 - 1 / 12)
    assert anls("xyz", ["invoice 1234"]) == 0.0  # below the 0.5 threshold
    assert anls("", [""]) == 1.0
