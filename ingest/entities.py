"""Ticker extraction: cashtags, exchange-qualified symbols and S&P 500 company names.

Precision matters more than recall: a post tagged with the wrong company pollutes that
company's sentiment series, while a missed mention only loses one data point. So:

- ``$AAPL`` cashtags count when the symbol is a known constituent (any case) or looks
  like a ticker written in capitals (``$GME``); ``$3M`` (an amount) and ``$lol`` do not.
- ``(NYSE: BA)`` / ``(NASDAQ:AAPL)`` count for plausible symbols; a bare ``(AAPL)`` only
  for known symbols of three letters or more that are not English words (not ``(ALL)``).
- Company names match case-sensitively on word boundaries, so ``apple pie`` is not Apple.
  Aliases come from the constituents' names with legal suffixes stripped
  (``Boeing``, ``Wells Fargo``, ``Tesla``) plus a few well-known short forms (``Google``).
- Names that are also common words, places, surnames or indices (``Target``, ``Visa``,
  ``Ball``, ``Dow``, ``Nasdaq``, ``3M`` ...) are *ambiguous*: they count only in a company
  context, e.g. ``Target Corp``, ``Target shares``, ``Target's earnings``, or ``$TGT``.
  "Target raised its forecast" is therefore not tagged: a deliberate recall loss.

The constituents list is ``ingest/data/sp500.csv`` (datasets/s-and-p-500-companies, PDDL).
"""

from __future__ import annotations

import csv
import functools
import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_CONSTITUENTS = Path(__file__).parent / "data" / "sp500.csv"

# Legal-form suffixes stripped (repeatedly) to turn "Apple Inc." into "Apple".
_SUFFIX = re.compile(
    r"(?:,?\s+(?:Inc\.?|Incorporated|Corporation|Corp\.?|Company|Companies|plc|Limited|Ltd\.?"
    r"|&\s+Co\.|&\s+Company|Co\.))+$"
)
_PAREN = re.compile(r"\s*\(([^)]*)\)\s*")
# Stripped names too generic to stand for the company at all ("News Corp" -> "News").
_NOT_ALIASES = frozenset({"News"})

# Short forms people actually write, for companies whose listed name is different.
EXTRA_ALIASES: Mapping[str, str] = {
    "Google": "GOOGL",
    "Alphabet": "GOOGL",
    "Facebook": "META",
    "Meta": "META",
    "Ford": "F",
    "NVIDIA": "NVDA",
    "AMD": "AMD",
    "JPMorgan": "JPM",
    "J.P. Morgan": "JPM",
    "Goldman": "GS",
    "BofA": "BAC",
    "Citi": "C",
    "Berkshire": "BRK.B",
    "Disney": "DIS",
    "Exxon": "XOM",
    "Exxon Mobil": "XOM",
    "Lilly": "LLY",
    "Eli Lilly": "LLY",
    "Pepsi": "PEP",
    "P&G": "PG",
    "Schwab": "SCHW",
    "Lockheed": "LMT",
    "Raytheon": "RTX",
    "General Electric": "GE",
    "Honeywell": "HON",
    "UnitedHealth": "UNH",
    "United Airlines": "UAL",
    "Live Nation": "LYV",
    "John Deere": "DE",
    "Amex": "AXP",
    "GM": "GM",
    "Fox": "FOXA",
    "News Corp": "NWSA",
}

# Aliases that are also everyday words, places, surnames, indices or units.
AMBIGUOUS_ALIASES: frozenset[str] = frozenset(
    {
        "3M", "AES", "APA", "HP", "F5", "GM",
        "Target", "Ball", "Block", "Visa", "Dow", "Nasdaq", "Southern", "Progressive",
        "Dover", "Flex", "Mosaic", "Carnival", "Hartford", "Williams", "Cooper", "Fox",
        "Ford", "Lilly", "Meta", "Goldman", "Citi", "Amex", "Chubb", "Xylem", "Corning",
        "Ventas", "Mettler", "Aon", "Waters", "Travelers", "Coherent", "Cummins", "Rollins",
        "Tapestry", "Casey's", "Workday", "Oracle", "Eaton", "McCormick",
        "FactSet",  # mostly cited as a data source: "FactSet consensus 86 cents"
    }
)  # fmt: skip

# Context that makes an ambiguous name a company: "Target Corp", "Target shares", "Target's
# earnings".
_COMPANY_WORDS = (
    r"shares|stock|stocks|shareholders|investors|earnings|revenue|revenues|profit|sales"
    r"|guidance|CEO|CFO|quarterly|dividend|buyback"
)
_AMBIGUOUS_CONTEXT = (
    rf"(?=\s+(?:Inc\b|Corp\b|Corporation\b|Co\.|{_COMPANY_WORDS})\b|'s\s+(?:{_COMPANY_WORDS})\b)"
)

# Ticker-shaped words that are English words or common acronyms: never bare symbols.
_COMMON_WORDS: frozenset[str] = frozenset(
    {
        "ALL", "ARE", "NOW", "LOW", "KEY", "CAT", "HAS", "FAST", "TECH", "MET", "DOC", "TAP",
        "ICE", "FIX", "GEN", "COR", "AMP", "DAY", "WELL", "DASH", "FLEX", "LITE", "ECHO",
        "DECK", "COIN", "HOOD", "COST", "EXE", "BALL", "CEO", "USA", "IPO", "ETF", "GDP",
    }
)  # fmt: skip
_CURRENCIES: frozenset[str] = frozenset({"USD", "EUR", "GBP", "JPY", "CAD", "AUD", "CHF", "CNY"})

_CASHTAG = re.compile(r"(?<![\w$])\$([A-Za-z]{1,6}(?:[.\-][A-Za-z]{1,2})?)(?![\w-])")
_EXCHANGE_SYMBOL = re.compile(
    r"\((?:(NYSE|NASDAQ|Nasdaq|NYSE\s?American|NYSE\s?Arca|AMEX|Cboe|BATS)\s*:\s*)?"
    r"([A-Z]{1,5}(?:\.[A-Z])?)\)"
)
_PLAUSIBLE = re.compile(r"^[A-Z]{1,5}(?:\.[A-Z])?$")
_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u2013": "-", "\u2014": "-"})


def _normalise(text: str) -> str:
    return text.translate(_QUOTES)


def aliases_for(security: str) -> list[str]:
    """The names a company is written as, derived from its listed name.

    ``"Apple Inc."`` -> ``["Apple Inc.", "Apple"]``; ``"Coca-Cola Company (The)"`` ->
    ``["Coca-Cola Company", "Coca-Cola"]``; ``"Lilly (Eli)"`` -> ``["Eli Lilly"]``.

    Args:
        security: the company's name as listed in the constituents file.

    Returns:
        Distinct aliases, longest first.
    """
    name = _normalise(security).strip()
    match = _PAREN.search(name)
    if match:
        inner = match.group(1).strip()
        name = _PAREN.sub(" ", name).strip()
        if inner != "The" and not inner.startswith("Class"):
            name = f"{inner} {name}"
    names = [name]
    stripped = _SUFFIX.sub("", name).strip(" ,")
    if stripped and stripped != name and stripped not in _NOT_ALIASES:
        names.append(stripped)
    return list(dict.fromkeys(names))


class TickerExtractor:
    """Finds the tickers a text talks about.

    Args:
        names: company alias -> ticker symbol.
        symbols: every known ticker symbol (upper case, ``BRK.B`` style).
        ambiguous: aliases that count only in a company context (see the module docstring).
    """

    def __init__(
        self,
        names: Mapping[str, str],
        symbols: Iterable[str],
        ambiguous: Iterable[str] = AMBIGUOUS_ALIASES,
    ) -> None:
        self.symbols = frozenset(s.upper() for s in symbols)
        self.names = {_normalise(alias): symbol for alias, symbol in names.items()}
        ambiguous_set = {_normalise(a) for a in ambiguous}
        plain = [a for a in self.names if a not in ambiguous_set]
        guarded = [a for a in self.names if a in ambiguous_set]
        self._plain = self._alternation(plain, "")
        self._guarded = self._alternation(guarded, _AMBIGUOUS_CONTEXT)

    @staticmethod
    def _alternation(aliases: list[str], context: str) -> re.Pattern[str] | None:
        if not aliases:
            return None
        # Longest first, so "FedEx Freight" wins over "FedEx" at the same position.
        body = "|".join(re.escape(a) for a in sorted(aliases, key=len, reverse=True))
        return re.compile(rf"(?<![\w$@&.\-])({body})(?![\w\-&]|'[a-rt-z]){context}")

    @classmethod
    def from_csv(cls, path: Path) -> TickerExtractor:
        """Build an extractor from a constituents CSV with ``Symbol`` and ``Security`` columns.

        Args:
            path: the CSV file.

        Returns:
            An extractor knowing every symbol and the aliases of every name, plus
            ``EXTRA_ALIASES`` whose symbol is in the file.

        Raises:
            ValueError: the file lacks the ``Symbol`` or ``Security`` column.
        """
        names: dict[str, str] = {}
        symbols: list[str] = []
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"Symbol", "Security"} <= set(reader.fieldnames):
                raise ValueError(f"{path}: needs Symbol and Security columns")
            for row in reader:
                symbol = row["Symbol"].strip().upper()
                symbols.append(symbol)
                for alias in aliases_for(row["Security"]):
                    # First listing wins: "Alphabet" is GOOGL (class A), not GOOG.
                    names.setdefault(alias, symbol)
        known = set(symbols)
        for alias, symbol in EXTRA_ALIASES.items():
            if symbol in known:
                names[alias] = symbol
        logger.debug("loaded %d symbols and %d aliases from %s", len(known), len(names), path)
        return cls(names, symbols)

    @classmethod
    @functools.cache
    def default(cls) -> TickerExtractor:
        """The extractor for the bundled S&P 500 list (built once, then shared)."""
        return cls.from_csv(DEFAULT_CONSTITUENTS)

    def _symbol(self, raw: str, *, require_known: bool) -> str | None:
        symbol = raw.upper().replace("-", ".")
        if symbol in self.symbols:
            return symbol
        if require_known or symbol in _CURRENCIES:
            return None
        return symbol if raw.isupper() and _PLAUSIBLE.match(symbol) else None

    def extract(self, text: str) -> tuple[str, ...]:
        """The tickers mentioned in ``text``, in order of first mention, without repeats.

        Args:
            text: a headline, post or article body.

        Returns:
            Upper-case ticker symbols (``"AAPL"``, ``"BRK.B"``).
        """
        text = _normalise(text)
        found: list[tuple[int, str]] = []
        for match in _CASHTAG.finditer(text):
            symbol = self._symbol(match.group(1), require_known=False)
            if symbol:
                found.append((match.start(), symbol))
        for match in _EXCHANGE_SYMBOL.finditer(text):
            exchange, raw = match.group(1), match.group(2)
            if exchange:
                symbol = self._symbol(raw, require_known=False)
            elif len(raw) >= 3 and raw not in _COMMON_WORDS:
                symbol = self._symbol(raw, require_known=True)
            else:
                symbol = None
            if symbol:
                found.append((match.start(), symbol))
        for pattern in (self._plain, self._guarded):
            if pattern is not None:
                for match in pattern.finditer(text):
                    found.append((match.start(), self.names[match.group(1)]))
        found.sort(key=lambda item: item[0])
        return tuple(dict.fromkeys(symbol for _, symbol in found))
