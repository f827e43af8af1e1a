"""Alert rules as code: a reviewed YAML file, validated into frozen rule objects.

The bundled ``monitor/rules.yaml`` holds the defaults; a deployment points
``alerts.rules_file`` at its own copy. Every field has a default, so a rule can be as
short as ``{name: drop_5m, kind: sentiment_drop, window: 5m}``. Durations are written
``90s``, ``5m``, ``6h`` or ``1d`` and are event time (the posts' ``published_at``).

A bad file raises ``ConfigError`` whose message and ``field`` name the offending entry,
e.g. ``rules[1].ratio: Input should be greater than 1``.
"""

from __future__ import annotations

import hashlib
import logging
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from finpulse.errors import ConfigError
from finpulse.schemas import Label, Severity, Window

logger = logging.getLogger(__name__)

BUNDLED_RULES = Path(__file__).with_name("rules.yaml")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> Any:
    """``"90s"``/``"5m"``/``"6h"``/``"1d"`` or a number of seconds -> ``timedelta``."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"invalid duration {value!r}: use e.g. 90s, 5m, 6h, 1d")
        return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return timedelta(seconds=value)
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class _Rule(BaseModel):
    """Fields every rule has: where it looks, how loud it is, and its anti-flapping guards."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_\-]*$")
    window: Window = "1h"
    severity: Severity = "warning"
    enabled: bool = True
    # Baseline EWMA half-life, in windows.
    halflife: float = Field(default=24.0, gt=0)
    # After an alert resolves, no new alert for the same rule and ticker within this time.
    cooldown: Duration = timedelta(hours=6)
    # A firing alert resolves once no window has met the condition for this long.
    resolve_after: Duration = timedelta(hours=3)
    # A window is closed (evaluated for good) once the stream's event time passes its
    # end by this much; open windows can only fire early.
    lateness: Duration = timedelta(minutes=5)
    # How many of the most negative posts an alert keeps as its explanation.
    explain_posts: int = Field(default=5, ge=1, le=50)

    @model_validator(mode="after")
    def _positive_durations(self) -> _Rule:
        for name in ("cooldown", "resolve_after", "lateness"):
            if getattr(self, name) < timedelta(0):
                raise ValueError(f"{name} must not be negative")
        return self

    def fingerprint(self) -> str:
        """A hash of what the stored baseline depends on; a change rebuilds the baseline."""
        basis = f"{self.kind}|{self.window}|{self.halflife}"  # type: ignore[attr-defined]
        return hashlib.sha256(basis.encode()).hexdigest()[:16]


class SentimentDropRule(_Rule):
    """The window's mean score falls well below the ticker's own EWMA baseline.

    z = (window mean - baseline mean) / (baseline per-post std / sqrt(n)): the window
    mean's distance from the baseline in standard errors, so a quiet ticker's single
    bad post is not a crash while 20 bad posts are.
    """

    kind: Literal["sentiment_drop"]
    z_threshold: float = Field(default=3.0, gt=0)
    # ...and the mean must sit at least this far below the baseline (score units),
    # so a huge-volume ticker does not alert on a statistically clear but tiny dip.
    min_drop: float = Field(default=0.3, ge=0, le=2)
    # Minimum-volume guard: windows with fewer posts are no evidence either way.
    min_posts: int = Field(default=5, ge=1)
    # Warm-up: no alert until the baseline has seen this many posts.
    min_baseline_posts: int = Field(default=20, ge=1)
    # Floor on the baseline's per-post standard deviation.
    min_std: float = Field(default=0.15, gt=0)


class NegativeVolumeSpikeRule(_Rule):
    """Many more negative posts in a window than the ticker's EWMA rate of negative posts."""

    kind: Literal["negative_volume_spike"]
    severity: Severity = "critical"
    # Fire when negatives >= ratio * max(baseline rate, min_rate)...
    ratio: float = Field(default=4.0, gt=1)
    # ...and negatives >= min_negative (minimum-volume guard).
    min_negative: int = Field(default=5, ge=1)
    # Floor on the baseline rate, in negative posts per window.
    min_rate: float = Field(default=0.25, gt=0)
    # The stream must have run this long (event time) before the rule may fire.
    warmup: Duration = timedelta(hours=12)


class VolumeSpikeRule(_Rule):
    """Many more posts in a window than the ticker's EWMA rate of posts (all labels).

    Near-duplicates count once: the count is the window's distinct stories
    (``WindowStats.n_unique``: posts of one near-duplicate cluster count as one), so a
    story syndicated or retweeted twenty times is not a spike on its own.
    """

    kind: Literal["volume_spike"]
    severity: Severity = "warning"
    # Fire when distinct posts >= ratio * max(baseline rate, min_rate)...
    ratio: float = Field(default=4.0, gt=1)
    # ...and distinct posts >= min_posts (minimum-volume guard).
    min_posts: int = Field(default=10, ge=1)
    # Floor on the baseline rate, in distinct posts per window.
    min_rate: float = Field(default=1.0, gt=0)
    # The stream must have run this long (event time) before the rule may fire.
    warmup: Duration = timedelta(hours=12)


def _phrase_list(value: Any) -> Any:
    """Strip, lowercase and de-duplicate the phrases; blank ones are an error."""
    if not isinstance(value, (list, tuple)):
        return value
    cleaned: list[Any] = []
    for i, phrase in enumerate(value):
        if not isinstance(phrase, str):
            # ValueError, not TypeError: pydantic turns only ValueError into a field error.
            raise ValueError(f"phrase {i} is not a string: {phrase!r}")  # noqa: TRY004
        flat = " ".join(phrase.lower().split())
        if not flat:
            raise ValueError(f"phrase {i} is blank")
        cleaned.append(flat)
    return tuple(dict.fromkeys(cleaned))


class _EventRule(BaseModel):
    """Fields of the rules that are not window detectors (risk events, model health)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_\-]*$")
    severity: Severity = "warning"
    enabled: bool = True
    # Only posts from these sources; empty = every source.
    sources: tuple[str, ...] = ()
    # A firing alert resolves once nothing has met the condition for this long (event time).
    resolve_after: Duration = timedelta(hours=24)
    # How many posts an alert keeps as its explanation.
    explain_posts: int = Field(default=5, ge=1, le=50)

    @model_validator(mode="after")
    def _positive_durations(self) -> _EventRule:
        for name in ("resolve_after", "cooldown", "lateness", "reference"):
            value = getattr(self, name, None)
            if value is not None and value < timedelta(0):
                raise ValueError(f"{name} must not be negative")
        return self

    def fingerprint(self) -> str:
        """A hash of what decides which posts match; a change restarts the rule's cursor."""
        basis = self.model_dump_json(include=self._fingerprint_fields())
        return hashlib.sha256(basis.encode()).hexdigest()[:16]

    def _fingerprint_fields(self) -> set[str]:
        return {"kind", "sources"}


class RiskEventRule(_EventRule):
    """A credible post about a ticker names a risk event (bankruptcy, fraud, ...).

    Judged per post, not per window: the first credible matching post fires at once.
    A phrase matches as whole words, case-insensitively, in the title or text
    (``fraud`` matches "Fraud probe" but not "fraudulent"; ``chapter 11`` matches
    "Chapter  11"). Credible = scored with a label in ``labels`` at a confidence of at
    least ``min_confidence``, and not a near-duplicate of a post an alert of this rule
    already holds for the ticker (a re-published story joins that alert, it never
    raises a second one). Further credible matches while the alert fires join it as
    evidence; it resolves after ``resolve_after`` without any.
    """

    kind: Literal["risk_event"]
    severity: Severity = "critical"
    phrases: Annotated[tuple[str, ...], BeforeValidator(_phrase_list)] = Field(min_length=1)
    labels: tuple[Label, ...] = Field(default=("negative",), min_length=1)
    min_confidence: float = Field(default=0.5, ge=0, le=1)

    def _fingerprint_fields(self) -> set[str]:
        return {"kind", "sources", "phrases", "labels", "min_confidence"}


class ModelHealthRule(_EventRule):
    """The classifier's own health per source, over closed windows of event time.

    ``check: low_confidence`` fires when the share of posts scored below
    ``low_confidence`` exceeds ``max_share``. ``check: label_drift`` fires when the
    window's label mix drifts from the reference period just before it (``reference``
    long): PSI above ``psi_threshold`` (``test: psi``), or a chi-square goodness-of-fit
    p-value below ``p_value`` (``test: chi2``). Windows with fewer than ``min_posts``
    posts (or a reference with fewer than ``min_reference_posts``) are no evidence.
    """

    kind: Literal["model_health"]
    check: Literal["low_confidence", "label_drift"]
    window: Window = "1h"
    severity: Severity = "warning"
    min_posts: int = Field(default=30, ge=1)
    # low_confidence
    low_confidence: float = Field(default=0.5, gt=0, le=1)
    max_share: float = Field(default=0.3, gt=0, lt=1)
    # label_drift
    test: Literal["psi", "chi2"] = "psi"
    psi_threshold: float = Field(default=0.25, gt=0)
    p_value: float = Field(default=0.001, gt=0, lt=1)
    reference: Duration = timedelta(days=1)
    min_reference_posts: int = Field(default=100, ge=1)
    # A window is judged once the source's event time passes its end by this much.
    lateness: Duration = timedelta(minutes=5)
    cooldown: Duration = timedelta(hours=6)
    resolve_after: Duration = timedelta(hours=3)

    def _fingerprint_fields(self) -> set[str]:
        return {"kind", "check", "window", "sources"}


WindowRule = SentimentDropRule | NegativeVolumeSpikeRule | VolumeSpikeRule
Rule = Annotated[
    SentimentDropRule | NegativeVolumeSpikeRule | VolumeSpikeRule | RiskEventRule | ModelHealthRule,
    Field(discriminator="kind"),
]
RULE_KINDS = ("sentiment_drop", "negative_volume_spike", "volume_spike", "risk_event", "model_health")


class RuleSet(BaseModel):
    """The alert rules in force."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: tuple[Rule, ...] = ()

    @model_validator(mode="after")
    def _unique_names(self) -> RuleSet:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.name in seen:
                raise ValueError(f"duplicate rule name {rule.name!r}")
            seen.add(rule.name)
        return self

    @property
    def enabled(self) -> tuple[WindowRule, ...]:
        """The enabled window rules: those ``monitor.alerting.evaluate`` runs through a detector.

        Risk-event and model-health rules are judged by their own passes
        (``monitor.risk_events``, ``monitor.health``); see ``risk_events``/``model_health``.
        """
        return tuple(
            rule
            for rule in self.rules
            if rule.enabled and not isinstance(rule, (RiskEventRule, ModelHealthRule))
        )

    @property
    def risk_events(self) -> tuple[RiskEventRule, ...]:
        """The enabled risk-event rules."""
        return tuple(r for r in self.rules if r.enabled and isinstance(r, RiskEventRule))

    @property
    def model_health(self) -> tuple[ModelHealthRule, ...]:
        """The enabled model-health rules."""
        return tuple(r for r in self.rules if r.enabled and isinstance(r, ModelHealthRule))

    @property
    def windows(self) -> tuple[str, ...]:
        """The window sizes the enabled rules read: ``aggregate`` must maintain these."""
        return tuple(dict.fromkeys(rule.window for rule in self.enabled))

    @classmethod
    def load(cls, path: Path | None = None) -> RuleSet:
        """Read and validate a rules file.

        Args:
            path: a YAML file with a top-level ``rules:`` list; None for the bundled defaults.

        Returns:
            The validated rules.

        Raises:
            ConfigError: the file is missing, is not YAML, or a rule is invalid; ``field``
                names the entry (``rules[0].z_threshold``).
        """
        path = BUNDLED_RULES if path is None else Path(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"rules file not found: {path}", field="alerts.rules_file") from exc
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ConfigError(
                f"rules file {path} is not readable YAML: {exc}", field="alerts.rules_file"
            ) from exc
        if not isinstance(raw, dict):
            raise ConfigError(
                f"rules file {path}: expected a mapping with a 'rules' list", field="rules"
            )
        try:
            ruleset = cls.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = _location(first["loc"])
            rule = _rule_name(raw, first["loc"])
            named = f" (rule {rule!r})" if rule else ""
            raise ConfigError(f"{path.name}: {where}{named}: {first['msg']}", field=where) from exc
        logger.debug("loaded %d alert rules from %s", len(ruleset.rules), path)
        return ruleset


def _rule_name(raw: dict[str, Any], loc: tuple[Any, ...]) -> str | None:
    """The ``name`` of the rule an error location points into, when it has one."""
    if len(loc) < 2 or loc[0] != "rules" or not isinstance(loc[1], int):
        return None
    rules = raw.get("rules")
    if not isinstance(rules, list) or loc[1] >= len(rules) or not isinstance(rules[loc[1]], dict):
        return None
    name = rules[loc[1]].get("name")
    return name if isinstance(name, str) else None


def _location(loc: tuple[Any, ...]) -> str:
    """``('rules', 1, 'sentiment_drop', 'z_threshold')`` -> ``rules[1].z_threshold``."""
    out = ""
    previous: Any = None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(previous, int) and part in RULE_KINDS:
            pass  # pydantic's discriminator tag, not a field name
        else:
            out += f".{part}" if out else str(part)
        previous = part
    return out or "rules"
