"""AU vocabulary: names, vectors, command-line assignments and named expressions."""

from __future__ import annotations

import numpy as np
import pytest

from ganimation.aus import (
    AU_DESCRIPTIONS,
    AU_IDS,
    AU_NAMES,
    EXPRESSIONS,
    NUM_AUS,
    OPENFACE_COLUMNS,
    OPENFACE_SCALE,
    AUError,
    au_index,
    aus_from_mapping,
    canonical_au_name,
    check_au_vector,
    expression_aus,
    format_aus,
    parse_au_assignment,
    parse_au_assignments,
)


def test_vocabulary() -> None:
    assert NUM_AUS == 17
    assert AU_IDS == (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26, 45)
    assert AU_NAMES[0] == "AU01" and AU_NAMES[8] == "AU12" and AU_NAMES[-1] == "AU45"
    assert OPENFACE_COLUMNS[0] == "AU01_r" and OPENFACE_COLUMNS[-1] == "AU45_r"
    assert set(AU_DESCRIPTIONS) == set(AU_NAMES)
    assert OPENFACE_SCALE == 5.0


@pytest.mark.parametrize("name", ["AU12", "au12", "Au12", "AU12_r", "au12_R", "12", "012", " AU012 ", "AU 12"])
def test_canonical_names(name: str) -> None:
    assert canonical_au_name(name) == "AU12"
    assert au_index(name) == 8


def test_canonical_single_digit() -> None:
    assert canonical_au_name("au1") == canonical_au_name("1") == canonical_au_name("AU01_r") == "AU01"
    assert au_index("AU45") == 16


@pytest.mark.parametrize("name", ["AU03", "3", "AU99", "au0", "AU100"])
def test_unknown_au(name: str) -> None:
    with pytest.raises(AUError, match="unknown action unit.*supported are AU01, AU02"):
        canonical_au_name(name)


@pytest.mark.parametrize("name", ["smile", "", "AU", "AU12x", "AU-12", "1.5", "AU12_c"])
def test_not_an_au_name(name: str) -> None:
    with pytest.raises(AUError, match="not an action unit name"):
        canonical_au_name(name)


def test_check_au_vector() -> None:
    values = np.linspace(0, 1, NUM_AUS)
    checked = check_au_vector(list(values))
    assert checked.dtype == np.float32 and checked.shape == (NUM_AUS,)
    np.testing.assert_allclose(checked, values, rtol=1e-6)
    # A column vector is flattened; rounding noise just outside [0, 1] is clipped, not refused.
    np.testing.assert_allclose(check_au_vector(values.reshape(-1, 1)), values, rtol=1e-6)
    edge = np.r_[-1e-7, np.zeros(NUM_AUS - 2), 1 + 1e-7]
    clipped = check_au_vector(edge)
    assert clipped[0] == 0.0 and clipped[-1] == 1.0


@pytest.mark.parametrize(("values", "message"), [
    (np.zeros(16), "expected 17 AU values .*got 16"),
    ([], "got 0"),
    (np.r_[np.zeros(16), np.nan], "non-finite value for AU45"),
    (np.r_[np.nan, np.inf, np.zeros(15)], "non-finite value for AU01, AU02"),
    (np.r_[np.zeros(8), 5.0, np.zeros(8)], "values outside \\[0, 1\\]: AU12=5"),
    (np.r_[-0.5, np.zeros(16)], "AU01=-0.5"),
])
def test_check_au_vector_errors(values: object, message: str) -> None:
    with pytest.raises(AUError, match=message):
        check_au_vector(values, source="my vector")
    with pytest.raises(AUError, match="^my vector: "):
        check_au_vector(values, source="my vector")


def test_aus_from_mapping() -> None:
    vector = aus_from_mapping({"au12": 0.8, "6": 0.5})
    expected = np.zeros(NUM_AUS, dtype=np.float32)
    expected[8], expected[4] = 0.8, 0.5
    np.testing.assert_allclose(vector, expected)
    base = np.full(NUM_AUS, 0.2)
    over = aus_from_mapping({"AU45": 1.0}, base)
    assert over[-1] == 1.0 and over[0] == pytest.approx(0.2)
    with pytest.raises(AUError, match="base AU vector"):
        aus_from_mapping({}, np.zeros(3))
    with pytest.raises(AUError, match="AU12=1.2"):
        aus_from_mapping({"AU12": 1.2})
    with pytest.raises(AUError, match="unknown action unit"):
        aus_from_mapping({"AU13": 0.2})


@pytest.mark.parametrize(("text", "expected"), [
    ("AU12=0.8", ("AU12", 0.8)),
    ("au06=1", ("AU06", 1.0)),
    (" 25 = 0 ", ("AU25", 0.0)),
    ("AU45_r=.5", ("AU45", 0.5)),
])
def test_parse_au_assignment(text: str, expected: tuple[str, float]) -> None:
    assert parse_au_assignment(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("AU12", "expected NAME=VALUE"),
    ("AU12:0.5", "expected NAME=VALUE"),
    ("AU12=high", "'high' is not a number"),
    ("AU12=", "is not a number"),
    ("AU12=1.5", "within \\[0, 1\\]"),
    ("AU12=-0.1", "within \\[0, 1\\]"),
    ("AU12=nan", "within \\[0, 1\\]"),
    ("AU12=inf", "within \\[0, 1\\]"),
    ("AU99=0.5", "unknown action unit 'AU99'"),
    ("smile=0.5", "not an action unit name: 'smile'"),
])
def test_parse_au_assignment_errors(text: str, message: str) -> None:
    with pytest.raises(AUError, match=message):
        parse_au_assignment(text)


def test_parse_au_assignments() -> None:
    parsed = parse_au_assignments(["AU12=0.8,AU06=0.6", "au12=0.3", " , ", "AU25=1"])
    assert parsed == {"AU12": 0.3, "AU06": 0.6, "AU25": 1.0}  # later assignments win
    assert parse_au_assignments([]) == {}
    with pytest.raises(AUError):
        parse_au_assignments(["AU12=0.8,AU13=0.1"])


@pytest.mark.parametrize("name", sorted(EXPRESSIONS))
def test_expression_aus(name: str) -> None:
    vector = expression_aus(name)
    assert vector.shape == (NUM_AUS,) and vector.dtype == np.float32
    expected = np.zeros(NUM_AUS, dtype=np.float32)
    for au, value in EXPRESSIONS[name].items():
        expected[AU_NAMES.index(au)] = value
    np.testing.assert_allclose(vector, expected, rtol=1e-6)
    assert 0.0 <= vector.min() and vector.max() <= 1.0
    np.testing.assert_allclose(expression_aus(name.upper(), 0.5), expected * 0.5, rtol=1e-6)
    np.testing.assert_array_equal(expression_aus(name, 0.0), np.zeros(NUM_AUS))


def test_expression_prototypes() -> None:
    def au(expression: str, name: str) -> float:
        return float(expression_aus(expression)[AU_NAMES.index(name)])

    assert au("happy", "AU12") == au("happy", "AU06") == 1.0
    assert np.count_nonzero(expression_aus("neutral")) == 0
    # surprise and fear at their apex: brows up, lids wide, jaw dropped
    for name in ("AU01", "AU02", "AU05", "AU26"):
        assert au("surprise", name) == au("fear", name) == 1.0
    assert au("fear", "AU04") > 0 and au("fear", "AU20") > 0 and au("surprise", "AU04") == 0
    # anger bares the teeth (EMFACS 4+5+7+10+25+26); disgust wrinkles the nose and parts the lips
    assert au("anger", "AU04") == au("anger", "AU10") == au("anger", "AU25") == 1.0
    assert au("disgust", "AU09") == au("disgust", "AU10") == 1.0 and au("disgust", "AU25") > 0
    assert au("sad", "AU15") == au("sad", "AU01") == 1.0 and au("sad", "AU12") == 0
    for name in EXPRESSIONS:
        assert all(au in AU_NAMES for au in EXPRESSIONS[name])


@pytest.mark.parametrize(("alias", "name"), [("happiness", "happy"), ("sadness", "sad"), ("Surprised", "surprise"),
                                             ("angry", "anger"), ("afraid", "fear"), ("disgusted", "disgust"),
                                             (" Happy ", "happy")])
def test_expression_aliases(alias: str, name: str) -> None:
    np.testing.assert_array_equal(expression_aus(alias), expression_aus(name))


def test_expression_intensity_scaling() -> None:
    full, half, quarter = expression_aus("fear"), expression_aus("fear", 0.5), expression_aus("fear", 0.25)
    np.testing.assert_allclose(half, full / 2, rtol=1e-6)
    np.testing.assert_allclose(quarter, full / 4, rtol=1e-6)


@pytest.mark.parametrize("intensity", [1.5, -0.1, float("nan"), float("inf")])
def test_expression_intensity_errors(intensity: float) -> None:
    with pytest.raises(AUError, match="intensity must be within \\[0, 1\\]"):
        expression_aus("happy", intensity)


def test_unknown_expression() -> None:
    with pytest.raises(AUError, match="unknown expression 'smug': choose from neutral, happy"):
        expression_aus("smug")


def test_format_aus() -> None:
    vector = expression_aus("happy")
    assert format_aus(vector, nonzero_only=True) == "AU06=1.00 AU12=1.00 AU25=0.50"
    assert format_aus(np.zeros(NUM_AUS), nonzero_only=True) == "(neutral)"
    assert len(format_aus(np.zeros(NUM_AUS)).split()) == NUM_AUS
