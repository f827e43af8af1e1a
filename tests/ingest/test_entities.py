"""Ticker extraction on the bundled S&P 500 list: recall on plain cases, precision on tricky ones."""

from __future__ import annotations

import pytest

from ingest.entities import TickerExtractor, aliases_for


@pytest.fixture(scope="module")
def extractor() -> TickerExtractor:
    return TickerExtractor.default()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Apple and Boeing rallied while Wells Fargo fell", ("AAPL", "BA", "WFC")),
        ("Buy $AAPL and $tsla now", ("AAPL", "TSLA")),
        ("$BRK.B and $BRK-B are the same", ("BRK.B",)),
        ("$GME squeeze is back", ("GME",)),  # not in the S&P 500, but a plausible cashtag
        ("Apple Inc. (NASDAQ: AAPL) reported", ("AAPL",)),
        ("Shares of Nvidia (NVDA) jumped", ("NVDA",)),
        ("Coca-Cola and Eli Lilly both rose", ("KO", "LLY")),
        ("McDonald\u2019s beat; so did Lowe's", ("MCD", "LOW")),
        ("FedEx Freight was spun off from FedEx", ("FDXF", "FDX")),
        ("Google and Facebook face new rules", ("GOOGL", "META")),
        ("JPMorgan Chase and Bank of America", ("JPM", "BAC")),
        ("Apple's iPhone sales", ("AAPL",)),
        ("Target shares fell 5%", ("TGT",)),
        ("Target's earnings beat estimates", ("TGT",)),
        ("Target Corp. cut its outlook", ("TGT",)),
        ("Visa Inc. raised its dividend", ("V",)),
        ("AT&T and Verizon", ("T", "VZ")),
        ("Boeing, Boeing and $BA again", ("BA",)),
    ],
)
def test_extracts_companies(extractor: TickerExtractor, text: str, expected: tuple[str, ...]) -> None:
    assert extractor.extract(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "I baked an apple pie",  # lower case is not the company
        "Target raised its forecast",  # "Target" alone: ambiguous word, no company context
        "We hit our sales target",
        "The Dow fell 300 points and the Nasdaq slipped",  # indices, not Dow Inc. / Nasdaq Inc.
        "The Dow's worst day this year",
        "Apply for a Visa before you travel",
        "They raised $3M in seed funding",  # an amount, not 3M
        "a 300 HP engine",
        "Meta-analysis of trials",
        "News of the day",  # "News Corp" must not shrink to "News"
        "I said $lol and $usd",  # lower-case unknown cashtag; currencies are not tickers
        "Pay in $USD only",
        "the pineapple market",  # "apple" inside a word
        "Subsection (A) and (ALL) and (IT)",  # bare one-letter / word-like symbols
        "snapple",
        "Kohl's Q3 adj. EPS 74 cents; FactSet consensus 86 cents",  # a data source, not news
    ],
)
def test_does_not_extract_from_ambiguous_or_unrelated_text(
    extractor: TickerExtractor, text: str
) -> None:
    assert extractor.extract(text) == ()


def test_aliases_strip_legal_suffixes_and_parentheses() -> None:
    assert aliases_for("Apple Inc.") == ["Apple Inc.", "Apple"]
    assert aliases_for("Tesla, Inc.") == ["Tesla, Inc.", "Tesla"]
    assert aliases_for("Coca-Cola Company (The)") == ["Coca-Cola Company", "Coca-Cola"]
    assert aliases_for("Alphabet Inc. (Class A)") == ["Alphabet Inc.", "Alphabet"]
    assert aliases_for("Lilly (Eli)") == ["Eli Lilly"]
    assert aliases_for("Merck & Co.") == ["Merck & Co.", "Merck"]
    assert aliases_for("Wells Fargo") == ["Wells Fargo"]
    assert aliases_for("News Corp (Class A)") == ["News Corp"]


def test_bundled_list_is_complete(extractor: TickerExtractor) -> None:
    assert len(extractor.symbols) == 503
    assert {"AAPL", "BRK.B", "GOOGL", "GOOG"} <= extractor.symbols
    assert TickerExtractor.default() is extractor  # loaded once


def test_custom_extractor() -> None:
    custom = TickerExtractor({"Acme": "ACME", "Widget": "WDGT"}, ["ACME", "WDGT"], ambiguous=["Widget"])
    assert custom.extract("Acme and Widget") == ("ACME",)
    assert custom.extract("Widget shares soar; $acme too") == ("WDGT", "ACME")
