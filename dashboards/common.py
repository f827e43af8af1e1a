"""What both dashboards share: datasource references, the SQL query type, panel helpers.

grafana-foundation-sdk has typed builders for Prometheus queries but none for Grafana's
PostgreSQL datasource, so ``SqlQuery`` is a small Dataquery of our own: the SDK's JSON
encoder calls ``to_json`` on whatever it meets, so it composes with the SDK's builders.
"""

from __future__ import annotations

from typing import Any, Literal

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models.dashboard import DataSourceRef, GridPos

# Fixed uids, so provisioning, dashboards and `finpulse dashboards push` agree on them.
POSTGRES = DataSourceRef(type_val="grafana-postgresql-datasource", uid="finpulse-postgres")
PROMETHEUS = DataSourceRef(type_val="prometheus", uid="finpulse-prometheus")
DATASOURCES = {ref.uid: ref.type_val for ref in (POSTGRES, PROMETHEUS)}


class SqlQuery(cogvariants.Dataquery):
    """A raw SQL target for Grafana's PostgreSQL datasource."""

    def __init__(self, sql: str, fmt: Literal["time_series", "table"], ref_id: str = "A") -> None:
        self.sql = sql
        self.fmt = fmt
        self.ref_id = ref_id

    def to_json(self) -> dict[str, Any]:
        return {
            "refId": self.ref_id,
            "datasource": {"type": POSTGRES.type_val, "uid": POSTGRES.uid},
            "editorMode": "code",
            "format": self.fmt,
            "rawQuery": True,
            "rawSql": self.sql,
        }


class Sql(cogbuilder.Builder[SqlQuery]):
    """Builder for ``SqlQuery`` (the SDK's panels take builders)."""

    def __init__(self, sql: str, fmt: Literal["time_series", "table"] = "time_series", ref_id: str = "A") -> None:
        self._query = SqlQuery(" ".join(sql.split()), fmt, ref_id)

    def build(self) -> SqlQuery:
        return self._query


class SqlAnnotationTarget:
    """The target of an annotation read from the PostgreSQL datasource."""

    def __init__(self, sql: str) -> None:
        self.sql = " ".join(sql.split())

    def to_json(self) -> dict[str, Any]:
        return {"refId": "Anno", "editorMode": "code", "format": "table", "rawQuery": True, "rawSql": self.sql}


class SqlAnnotationTargetBuilder(cogbuilder.Builder[SqlAnnotationTarget]):
    def __init__(self, sql: str) -> None:
        self._target = SqlAnnotationTarget(sql)

    def build(self) -> SqlAnnotationTarget:
        return self._target


class Layout:
    """Numbers panels and places them left to right, top to bottom, on Grafana's 24-column grid."""

    def __init__(self) -> None:
        self._next_id = 1
        self._x = 0
        self._y = 0
        self._row_h = 0

    def place(self, panel: Any, w: int, h: int) -> Any:
        """Give ``panel`` the next id and grid position; returns it."""
        if self._x + w > 24:
            self._x, self._y, self._row_h = 0, self._y + self._row_h, 0
        panel.id(self._next_id).grid_pos(GridPos(x=self._x, y=self._y, w=w, h=h))
        self._next_id += 1
        self._x += w
        self._row_h = max(self._row_h, h)
        return panel

    def row(self, row: Any) -> Any:
        """Start a new full-width row panel."""
        if self._x:
            self._x, self._y, self._row_h = 0, self._y + self._row_h, 0
        row.id(self._next_id).grid_pos(GridPos(x=0, y=self._y, w=24, h=1))
        self._next_id += 1
        self._y += 1
        return row
