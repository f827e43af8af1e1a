"""Render ``ReportData`` as one self-contained HTML file (plotly's JavaScript inlined).

The page needs no network at view time: no CDN, no fonts, no images from elsewhere. A tiny
script records JavaScript errors into ``#render-status`` (``data-errors``) and counts the
charts drawn (``data-charts``), so a headless browser can check that the page rendered.
"""

from __future__ import annotations

import html
import math
from datetime import datetime
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from finpulse.report.data import AlertRow, ModelInfo, ReportData

MAX_TICKERS = 8
NEG, POS, NEUTRAL, ACCENT = "#c0392b", "#1e8449", "#7f8c8d", "#2c5d8f"
SEVERITY_COLOURS = {"critical": "#922b21", "high": "#c0392b", "warning": "#b9770e", "medium": "#b9770e",
                    "low": "#2874a6", "info": "#2874a6"}

CSS = """
body{font-family:-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;margin:0;background:#f4f6f8;color:#1c2833}
header{background:#1c2833;color:#fff;padding:22px 36px}
header h1{margin:0;font-size:24px;font-weight:600}
header p{margin:6px 0 0;color:#c8d0d8;font-size:14px}
main{padding:20px 36px 40px;max-width:1400px}
section{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.08);padding:18px 22px;margin:0 0 18px}
h2{font-size:18px;margin:0 0 12px}
.note{background:#fef5e7;border-left:4px solid #b9770e;padding:8px 12px;margin:0 0 14px;font-size:14px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(170px,1fr));gap:14px;margin:0 0 18px}
.card{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.08);padding:14px 16px}
.card .label{font-size:12px;text-transform:uppercase;letter-spacing:.05em;color:#5d6d7e}
.card .value{font-size:26px;font-weight:600;margin-top:4px}
.card .value.small{font-size:15px;word-break:break-all}
.card .sub{font-size:12px;color:#5d6d7e;margin-top:2px}
table{border-collapse:collapse;width:100%;font-size:14px}
th{text-align:left;color:#5d6d7e;font-weight:600;border-bottom:2px solid #e5e8eb;padding:6px 8px}
td{border-bottom:1px solid #eef0f2;padding:6px 8px;vertical-align:top}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.neg{color:#c0392b}.pos{color:#1e8449}
.alert{border-left:4px solid #c0392b;padding:10px 14px;margin:0 0 12px;background:#fbfcfc}
.alert .head{font-weight:600}
.badge{display:inline-block;color:#fff;border-radius:4px;padding:1px 7px;font-size:12px;margin-right:6px}
.alert .why{margin:6px 0;color:#34495e}
.alert ol{margin:4px 0 0 18px;padding:0;font-size:13px}
.alert li{margin:2px 0}
.muted{color:#7f8c8d}
a{color:#2c5d8f}
footer{color:#7f8c8d;font-size:12px;padding:0 36px 24px}
"""

ERROR_HOOK = """<script>
window.__finpulseErrors = [];
window.addEventListener('error', function (e) { window.__finpulseErrors.push(String(e.message)); });
(function () { var orig = console.error; console.error = function () {
  window.__finpulseErrors.push(Array.prototype.join.call(arguments, ' ')); return orig.apply(console, arguments); }; })();
</script>"""

STATUS_SCRIPT = """<script>
(function () {
  var s = document.getElementById('render-status');
  s.setAttribute('data-charts', String(document.querySelectorAll('.js-plotly-plot .main-svg').length));
  s.setAttribute('data-errors', String(window.__finpulseErrors.length));
  s.textContent = window.__finpulseErrors.join('\\n');
})();
</script>"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt_time(at: datetime | None) -> str:
    return "" if at is None else f"{at:%Y-%m-%d %H:%M}"


def _signed(value: float) -> str:
    cls = "neg" if value < -0.05 else "pos" if value > 0.05 else ""
    return f'<span class="{cls}">{value:+.2f}</span>'


def _ranked_tickers(data: ReportData) -> list[str]:
    """Tickers by alert count, then by number of posts."""
    alerts: dict[str, int] = {}
    for alert in data.alerts:
        alerts[alert.ticker] = alerts.get(alert.ticker, 0) + 1
    return sorted(data.series, key=lambda tk: (-alerts.get(tk, 0), -sum(r["n"] for r in data.series[tk]), tk))


def market_figure(data: ReportData) -> go.Figure:
    """Volume-weighted market sentiment index with total volume bars."""
    by_start: dict[datetime, list[float]] = {}
    for rows in data.series.values():
        for r in rows:
            acc = by_start.setdefault(r["start"], [0.0, 0.0])
            acc[0] += r["mean_score"] * r["n"]
            acc[1] += r["n"]
    starts = sorted(by_start)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_bar(x=starts, y=[by_start[s][1] for s in starts], name="posts", marker_color="#d5dbdf",
                secondary_y=True, hovertemplate="%{y} posts<extra></extra>")
    fig.add_scatter(x=starts, y=[by_start[s][0] / by_start[s][1] for s in starts], name="market sentiment",
                    mode="lines", line={"color": ACCENT, "width": 2.5}, secondary_y=False,
                    hovertemplate="%{x|%Y-%m-%d %H:%M}: %{y:+.2f}<extra></extra>")
    for alert in data.alerts:
        fig.add_vline(x=alert.fired_at, line={"color": NEG, "width": 1, "dash": "dot"})
    if data.alerts:
        fig.add_scatter(x=[a.fired_at for a in data.alerts], y=[0.92] * len(data.alerts), mode="markers",
                        marker={"symbol": "triangle-down", "size": 12, "color": NEG}, name="alert",
                        text=[f"{a.ticker} {a.rule} ({a.severity})" for a in data.alerts],
                        hovertemplate="%{text}<br>%{x|%Y-%m-%d %H:%M}<extra></extra>", secondary_y=False)
    fig.update_yaxes(title_text="sentiment (volume-weighted)", range=[-1, 1], zeroline=True,
                     zerolinecolor="#aab7b8", secondary_y=False)
    fig.update_yaxes(title_text=f"posts per {data.window}", showgrid=False, rangemode="tozero", tickformat=",d",
                     secondary_y=True)
    fig.update_traces(opacity=0.55, selector={"type": "bar"})
    fig.update_layout(height=320, margin={"l": 60, "r": 60, "t": 30, "b": 30}, plot_bgcolor="#fff",
                      legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "xanchor": "right", "x": 1},
                      bargap=0.1)
    return fig


BUCKET_HOURS = (1, 2, 3, 6, 12, 24)


def bucketed(series: list[dict[str, Any]], hours: int) -> list[dict[str, Any]]:
    """Merge windows into ``hours``-long buckets (post-weighted mean), so sparse tickers read well."""
    if hours <= 1:
        return series
    out: dict[datetime, dict[str, Any]] = {}
    for r in series:
        start = r["start"].replace(minute=0, second=0, microsecond=0)
        start = start.replace(hour=start.hour - start.hour % hours)
        acc = out.setdefault(start, {"start": start, "n": 0, "sum": 0.0})
        acc["n"] += r["n"]
        acc["sum"] += r["mean_score"] * r["n"]
    return [{"start": k, "n": v["n"], "mean_score": v["sum"] / v["n"]} for k, v in sorted(out.items())]


def bucket_hours(data: ReportData) -> int:
    """About 24 buckets over the span the data covers (1 h at least; only for 1h windows)."""
    if data.window != "1h":
        return 1
    starts = [r["start"] for rows in data.series.values() for r in rows]
    if not starts:
        return 1
    span_h = (max(starts) - min(starts)).total_seconds() / 3600
    return next((h for h in BUCKET_HOURS if span_h / h <= 30), 24)


def ticker_figure(data: ReportData, tickers: list[str]) -> go.Figure:
    """One panel per ticker: sentiment line, volume bars, alert markers."""
    hours = bucket_hours(data)
    cols = 2 if len(tickers) > 1 else 1
    rows = math.ceil(len(tickers) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=tickers, shared_xaxes=True,
                        vertical_spacing=0.12 / max(rows, 1) + 0.03, horizontal_spacing=0.08,
                        specs=[[{"secondary_y": True}] * cols for _ in range(rows)])
    for i, ticker in enumerate(tickers):
        row, col = i // cols + 1, i % cols + 1
        series = bucketed(data.series[ticker], hours)
        x = [r["start"] for r in series]
        fig.add_bar(x=x, y=[r["n"] for r in series], marker_color="#d5dbdf", name="posts", showlegend=i == 0,
                    legendgroup="posts", row=row, col=col, secondary_y=True,
                    hovertemplate="%{y} posts<extra></extra>")
        fig.add_scatter(x=x, y=[r["mean_score"] for r in series], mode="lines+markers",
                        line={"color": ACCENT, "width": 2}, marker={"size": 5},
                        name="sentiment", showlegend=i == 0, legendgroup="sentiment", row=row, col=col,
                        secondary_y=False, hovertemplate="%{x|%m-%d %H:%M}: %{y:+.2f}<extra></extra>")
        marks = [a for a in data.alerts if a.ticker == ticker]
        if marks:
            for a in marks:
                fig.add_vline(x=a.fired_at, line={"color": NEG, "width": 1, "dash": "dot"}, row=row, col=col)
            fig.add_scatter(
                x=[a.fired_at for a in marks], y=[0.92] * len(marks),
                mode="markers", marker={"symbol": "triangle-down", "size": 13, "color": NEG,
                                        "line": {"color": "#fff", "width": 1}},
                name="alert", showlegend=not any(a.ticker in tickers[:i] for a in data.alerts),
                legendgroup="alert", text=[f"{a.rule} ({a.severity})" for a in marks],
                hovertemplate="%{text}<br>%{x|%Y-%m-%d %H:%M}<extra></extra>",
                row=row, col=col, secondary_y=False,
            )
        fig.update_yaxes(range=[-1.05, 1.05], zeroline=True, zerolinecolor="#aab7b8", row=row, col=col,
                         secondary_y=False)
        fig.update_yaxes(showgrid=False, rangemode="tozero", tickformat=",d", nticks=4, row=row, col=col,
                         secondary_y=True)
    fig.update_traces(opacity=0.55, selector={"type": "bar"})
    fig.update_layout(height=max(280, 230 * rows + 50), margin={"l": 50, "r": 50, "t": 70, "b": 30},
                      plot_bgcolor="#fff", bargap=0.1,
                      legend={"orientation": "h", "yanchor": "bottom", "y": 1.0 + 45 / max(280, 230 * rows + 50),
                              "xanchor": "right", "x": 1})
    return fig


def _chart(fig: go.Figure) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False,
                       config={"displaylogo": False, "displayModeBar": False, "responsive": True})


def _cards(data: ReportData) -> str:
    total = sum(r["n"] for rows in data.series.values() for r in rows)
    weighted = sum(r["mean_score"] * r["n"] for rows in data.series.values() for r in rows)
    negative = sum(r["negative_share"] * r["n"] for rows in data.series.values() for r in rows)
    firing = sum(a.state == "firing" for a in data.alerts)
    model = data.model
    f1 = model.metrics.get("test_macro_f1") if model else None
    cards = [
        ("Posts scored", f"{data.scored:,}", f"{data.posts:,} stored in range"),
        ("Tickers", f"{len(data.series)}", f"{data.window} windows"),
        ("Market sentiment", f"{weighted / total:+.2f}" if total else "n/a",
         f"{negative / total:.0%} of mentions negative" if total else ""),
        ("Alerts", f"{len(data.alerts)}", f"{firing} still firing"),
        ("Model", esc(model.version if model else "unknown"),
         f"macro-F1 {f1:.3f} on the test split" if isinstance(f1, (int, float)) else ""),
    ]
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="label">{esc(label)}</div>'
        f'<div class="value{" small" if len(value) > 12 else ""}">{value}</div><div class="sub">{esc(sub)}</div></div>'
        for label, value, sub in cards
    ) + "</div>"


def _overview(data: ReportData, tickers: list[str], limit: int = 20) -> str:
    rows = []
    for ticker in tickers[:limit]:
        series = data.series[ticker]
        n = sum(r["n"] for r in series)
        mean = sum(r["mean_score"] * r["n"] for r in series) / n
        low = min(series, key=lambda r: r["mean_score"])
        neg = sum(r["negative_share"] * r["n"] for r in series) / n
        alerts = sum(a.ticker == ticker for a in data.alerts)
        rows.append(f"<tr><td><b>{esc(ticker)}</b></td><td class='num'>{n:,}</td><td class='num'>{_signed(mean)}</td>"
                    f"<td class='num'>{_signed(low['mean_score'])} <span class='muted'>{_fmt_time(low['start'])}</span></td>"
                    f"<td class='num'>{neg:.0%}</td><td class='num'>{alerts or ''}</td></tr>")
    return ("<table><tr><th>ticker</th><th class='num'>mentions</th><th class='num'>mean sentiment</th>"
            f"<th class='num'>lowest {data.window} window</th><th class='num'>negative</th>"
            "<th class='num'>alerts</th></tr>" + "".join(rows) + "</table>"
            + (f"<p class='muted'>and {len(tickers) - limit} more tickers with fewer mentions.</p>"
               if len(tickers) > limit else ""))


def _alert(alert: AlertRow) -> str:
    colour = SEVERITY_COLOURS.get(alert.severity, NEG)
    state = ("firing" if alert.state == "firing"
             else f"resolved {_fmt_time(alert.resolved_at)}")
    posts = "".join(
        f"<li>{_signed(e.score)} "
        + (f'<a href="{esc(e.url)}">{esc(e.headline[:160])}</a>' if e.url else esc(e.headline[:160]))
        + f" <span class='muted'>{_fmt_time(e.published_at)}</span></li>"
        for e in alert.evidence
    )
    return (
        f'<div class="alert" style="border-left-color:{colour}"><div class="head">'
        f'<span class="badge" style="background:{colour}">{esc(alert.severity)}</span>'
        f"{esc(alert.ticker)} &middot; {esc(alert.rule.replace('_', ' '))} &middot; {esc(alert.window)} window"
        f" <span class='muted'>fired {_fmt_time(alert.fired_at)} UTC, {esc(state)}</span></div>"
        f'<div class="why">{esc(alert.summary)}</div>'
        + (f"<div class='muted'>Evidence (most negative first):</div><ol>{posts}</ol>" if posts else "")
        + "</div>"
    )


def _model(model: ModelInfo | None) -> str:
    if model is None:
        return "<p class='muted'>No model is registered in this database.</p>"
    m = model.metrics
    figures = [("test macro-F1", "test_macro_f1"), ("test accuracy", "test_accuracy"),
               ("calibration error (ECE)", "test_ece"), ("test examples", "test_n"),
               ("PhraseBank (all agree) macro-F1", "phrasebank_allagree_macro_f1"),
               ("PhraseBank (50% agree) macro-F1", "phrasebank_50agree_macro_f1")]
    cells = "".join(
        f"<tr><td>{esc(label)}</td><td class='num'>{m[key]:,.3f}</td></tr>" if isinstance(m[key], float)
        else f"<tr><td>{esc(label)}</td><td class='num'>{esc(m[key])}</td></tr>"
        for label, key in figures if key in m
    )
    per_class = "".join(
        f"<tr><td>{esc(label)}</td><td class='num'>{v.get('precision', 0):.3f}</td>"
        f"<td class='num'>{v.get('recall', 0):.3f}</td><td class='num'>{v.get('f1', 0):.3f}</td>"
        f"<td class='num'>{int(v.get('support', 0)):,}</td></tr>"
        for label, v in model.per_class.items()
    )
    return (
        f"<p><b>{esc(model.version)}</b> ({esc(model.status)}) &middot; base {esc(model.base)} &middot; "
        f"{esc(model.method)}</p><div style='display:flex;gap:30px;flex-wrap:wrap;align-items:flex-start'>"
        f"<table style='width:auto;min-width:320px'><tr><th>quality figure</th><th class='num'>value</th></tr>{cells}</table>"
        + (f"<table style='width:auto;min-width:420px'><tr><th>class</th><th class='num'>precision</th>"
           f"<th class='num'>recall</th><th class='num'>F1</th><th class='num'>support</th></tr>{per_class}</table>"
           if per_class else "")
        + "</div>"
    )


def render_html(data: ReportData) -> str:
    """The whole report as one HTML document."""
    ranked = _ranked_tickers(data)
    shown = ranked[:MAX_TICKERS]
    period = f"{_fmt_time(data.range.start)} to {_fmt_time(data.range.end)} UTC"
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>finpulse report, {esc(period)}</title>", ERROR_HOOK, f"<style>{CSS}</style>",
        f"<script>{get_plotlyjs()}</script></head><body>",
        (f"<header><h1>finpulse market sentiment report</h1><p>{esc(period)} (event time) &middot; "
         f"generated {_fmt_time(data.generated_at)} UTC</p></header><main>"),
    ]
    if data.range.note:
        parts.append(f'<div class="note">Note: {esc(data.range.note)}.</div>')
    parts.append(_cards(data))
    alerts = "".join(_alert(a) for a in data.alerts) or "<p class='muted'>No alerts fired in this range.</p>"
    parts.append(f"<section><h2>Alerts ({len(data.alerts)})</h2>{alerts}</section>")
    if not data.series:
        parts.append("<section><h2>No data</h2><p>No aggregates in this range. Try a longer --since.</p></section>")
    else:
        parts.append("<section><h2>Market sentiment index</h2><p class='muted'>Mean score over every ticker, "
                     f"each {data.window} window weighted by its number of posts; bars: posts.</p>"
                     f"{_chart(market_figure(data))}</section>")
        more = f" (top {len(shown)} of {len(ranked)}: alerts first, then most mentioned)" if len(ranked) > len(shown) else ""
        parts.append(f"<section><h2>Sentiment and volume by ticker{esc(more)}</h2><p class='muted'>Line: mean "
                     f"sentiment per {bucket_hours(data) if data.window == '1h' else data.window}"
                     f"{'h' if data.window == '1h' else ''} (-1 negative, +1 positive); bars: posts; "
                     f"red triangles: alerts.</p>{_chart(ticker_figure(data, shown))}</section>")
        parts.append(f"<section><h2>Tickers</h2>{_overview(data, ranked)}</section>")
    parts.append(f"<section><h2>Model</h2>{_model(data.model)}</section>")
    parts.append("</main><footer>finpulse &middot; charts by plotly, embedded; this file needs no network."
                 "<div id='render-status' data-errors='-1' data-charts='-1' style='display:none'></div></footer>")
    parts.append(STATUS_SCRIPT + "</body></html>")
    return "".join(parts)


def write_report(data: ReportData, out: Path) -> Path:
    """Write the report to ``out`` (parent folders created); returns the path."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(data), encoding="utf-8")
    return out
