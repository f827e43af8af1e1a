"""The ``/v1`` routes: history (sentiment, posts, alerts), acknowledgement, feedback.

Every list takes ``limit`` (default and maximum from ``api.*`` settings) and ``cursor``
(the ``next_cursor`` of the previous page). Parameters that do not parse are a 422
naming the parameter; a cursor from elsewhere is a 400 naming ``cursor``.
"""

# No `from __future__ import annotations`: FastAPI reads these signatures at run time, and
# the limit parameter type is built per application (from settings) inside a function.

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import AfterValidator

from finpulse.api import models as m
from finpulse.api.auth import require
from finpulse.api.params import NAME_PATTERN, TICKER_PATTERN, clean_text, parse_time
from finpulse.settings import ApiSettings
from finpulse.storage import Storage, history, versions
from finpulse.storage.feedback import UnknownPost, add_feedback
from finpulse.storage.keys import ApiKey

T = TypeVar("T")

TickerQ = Annotated[str | None, Query(pattern=TICKER_PATTERN, description="e.g. AAPL")]
NameQ = Annotated[str | None, Query(pattern=NAME_PATTERN)]
TimeQ = Annotated[
    str | None,
    Query(max_length=40, description="ISO 8601 time (UTC if no offset) or a duration back "
                                     "from now: 7d, 12h, 30m"),
]
CursorQ = Annotated[str | None, Query(max_length=1000, description="next_cursor of the previous page")]
TextQ = Annotated[str | None, Query(min_length=1, max_length=200), AfterValidator(clean_text)]
ModelQ = Annotated[
    str | None,
    Query(min_length=1, max_length=200,
          description="a model version: read its scores (shadow and rescored ones too) "
                      "instead of the live ones"),
    AfterValidator(clean_text),
]


def invalid(where: str, name: str, message: str) -> HTTPException:
    """A 422 in FastAPI's validation-error shape, naming the parameter."""
    return HTTPException(422, [{"loc": [where, name], "msg": message, "type": "value_error"}])


def time_param(value: str | None, name: str) -> datetime | None:
    """Parse a time query parameter; a 422 naming it when it does not parse."""
    if value is None:
        return None
    try:
        return parse_time(value, name)
    except ValueError as exc:
        raise invalid("query", name, str(exc)) from exc


def paged(call: Callable[[], T]) -> T:
    """Run a page query; a bad cursor is the client's error (400 naming ``cursor``)."""
    try:
        return call()
    except ValueError as exc:
        raise HTTPException(400, f"cursor: {exc}") from exc


def storage_of(request: Request) -> Storage:
    return request.app.state.storage  # type: ignore[no-any-return]


def model_param(storage: Storage, model: str | None) -> str | None:
    """A ``model`` parameter naming a known version; a 422 naming it otherwise."""
    if model is not None and not versions.known_version(storage, model):
        raise invalid("query", "model", f"unknown model version {model!r}")
    return model


def build_router(cfg: ApiSettings) -> APIRouter:
    """The ``/v1`` read routes, acknowledgement and feedback, with ``cfg``'s list limits."""
    router = APIRouter(prefix="/v1")
    LimitQ = Annotated[int, Query(ge=1, le=cfg.max_limit, description=f"at most {cfg.max_limit}")]
    reader, analyst = Depends(require("reader")), Depends(require("analyst"))
    default = cfg.default_limit

    @router.get("/tickers/{ticker}/sentiment", response_model=m.SentimentPage, tags=["history"])
    def sentiment(
        ticker: Annotated[str, Path(pattern=TICKER_PATTERN)],
        request: Request,
        window: Literal["1m", "5m", "1h", "1d"] = "1h",
        since: TimeQ = None,
        until: TimeQ = None,
        limit: LimitQ = default,
        cursor: CursorQ = None,
        model: ModelQ = None,
        key: ApiKey = reader,
    ) -> Any:
        """A ticker's sentiment series: window aggregates, oldest first.

        ``model``: computed from that version's scores instead of the live aggregates.
        """
        start, end = time_param(since, "since"), time_param(until, "until")
        version = model_param(storage_of(request), model)
        return paged(lambda: history.sentiment_series(
            storage_of(request), ticker, window, since=start, until=end, limit=limit, cursor=cursor,
            model=version))

    @router.get("/posts", response_model=m.PostPage, tags=["history"])
    def posts(
        request: Request,
        ticker: TickerQ = None,
        source: NameQ = None,
        label: Literal["negative", "neutral", "positive"] | None = None,
        since: TimeQ = None,
        until: TimeQ = None,
        q: TextQ = None,
        limit: LimitQ = default,
        cursor: CursorQ = None,
        model: ModelQ = None,
        key: ApiKey = reader,
    ) -> Any:
        """Scored posts, newest first; ``q`` searches title and text.

        ``model``: that version's scores (``label`` filters them) instead of the live ones.
        """
        start, end = time_param(since, "since"), time_param(until, "until")
        version = model_param(storage_of(request), model)
        return paged(lambda: history.search_posts(
            storage_of(request), ticker=ticker, source=source, label=label, since=start,
            until=end, q=q, limit=limit, cursor=cursor, model=version))

    @router.get("/alerts", response_model=m.AlertPage, tags=["alerts"])
    def alerts(
        request: Request,
        state: Literal["firing", "resolved"] | None = None,
        ticker: TickerQ = None,
        rule: NameQ = None,
        severity: m.Severity | None = None,
        since: TimeQ = None,
        limit: LimitQ = default,
        cursor: CursorQ = None,
        key: ApiKey = reader,
    ) -> Any:
        """Alerts, most recently fired first."""
        start = time_param(since, "since")
        return paged(lambda: history.list_alerts(
            storage_of(request), state=state, ticker=ticker, rule=rule, severity=severity,
            since=start, limit=limit, cursor=cursor))

    @router.post("/alerts/{alert_id}/ack", response_model=m.AlertOut, tags=["alerts"],
                 responses={404: {"description": "no such alert"}})
    def ack(
        alert_id: Annotated[str, Path(max_length=200), AfterValidator(clean_text)],
        request: Request,
        body: m.AckIn | None = None,
        key: ApiKey = analyst,
    ) -> Any:
        """Acknowledge an alert: it sends no further updates until it resolves."""
        comment = body.comment if body is not None else None
        alert = history.acknowledge_alert(storage_of(request), alert_id, key.name, comment)
        if alert is None:
            raise HTTPException(404, f"alert_id: no alert {alert_id!r}")
        return alert

    @router.post("/feedback", response_model=m.FeedbackOut, status_code=201, tags=["feedback"],
                 responses={404: {"description": "no such post"}})
    def feedback(body: m.FeedbackIn, request: Request, key: ApiKey = analyst) -> Any:
        """An analyst's corrected label for a post (the retraining job learns from it)."""
        try:
            return add_feedback(storage_of(request), body.post_id, body.label, key.name, body.comment)
        except UnknownPost as exc:
            raise HTTPException(404, str(exc)) from exc

    return router
