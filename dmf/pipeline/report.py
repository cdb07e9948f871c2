"""A run report people would rather look at than read: ``report.html`` beside a run's JSON
summary, with static SVG charts drawn here (no plotting library): the training metric (and
validation curves) and the seconds of each epoch, the seconds of each stage, histograms of
the ratings and the predictions, the top-k's catalog coverage, and the metrics as a table.
Each part is drawn when the summary has its numbers."""

from __future__ import annotations

import html
import math
import os
from pathlib import Path

_WIDTH, _HEIGHT, _PAD = 560, 220, 40


def line_chart(title: str, values: list[float], x_label: str = "epoch") -> str:
    """An SVG line chart of ``values`` against 1, 2, …, with min/max labels."""
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not finite:
        return ""
    low, high = min(finite), max(finite)
    span = (high - low) or 1.0
    step = (_WIDTH - 2 * _PAD) / max(len(values) - 1, 1)
    points = " ".join(f"{_PAD + i * step:.1f},{_HEIGHT - _PAD - (v - low) / span * (_HEIGHT - 2 * _PAD):.1f}"
                      for i, v in enumerate(values) if v in finite)
    return (f'<figure><svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{_HEIGHT}" role="img">'
            f'<title>{html.escape(title)}</title>'
            f'<rect width="100%" height="100%" fill="white" stroke="#ccc"/>'
            f'<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{points}"/>'
            f'<text x="4" y="{_PAD}" font-size="11">{high:.4g}</text>'
            f'<text x="4" y="{_HEIGHT - _PAD}" font-size="11">{low:.4g}</text>'
            f'<text x="{_WIDTH / 2}" y="{_HEIGHT - 8}" font-size="11" text-anchor="middle">{x_label} 1 … '
            f'{len(values)}</text></svg><figcaption>{html.escape(title)}</figcaption></figure>')


def bar_chart(title: str, values: dict[str, float], unit: str = "s") -> str:
    """An SVG horizontal bar chart of named values (seconds per stage)."""
    values = {k: v for k, v in values.items() if isinstance(v, (int, float)) and math.isfinite(v)}
    if not values:
        return ""
    longest = max(values.values()) or 1.0
    row = 22
    height = row * len(values) + 10
    bars = "".join(
        f'<text x="4" y="{i * row + 16}" font-size="12">{html.escape(name)}</text>'
        f'<rect x="140" y="{i * row + 4}" width="{(_WIDTH - 220) * value / longest:.1f}" height="14" fill="#ff7f0e"/>'
        f'<text x="{146 + (_WIDTH - 220) * value / longest:.1f}" y="{i * row + 16}" font-size="12">{value:.4g} {unit}</text>'
        for i, (name, value) in enumerate(values.items()))
    return (f'<figure><svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{height}" role="img">'
            f'<title>{html.escape(title)}</title>{bars}</svg><figcaption>{html.escape(title)}</figcaption></figure>')


def histogram_chart(title: str, edges: list[float], counts: list[int] | None) -> str:
    """An SVG histogram: a bar per bin of ``edges`` (``len(edges) - 1`` counts)."""
    if not counts or not any(counts):
        return ""
    tallest = max(counts)
    step = (_WIDTH - 2 * _PAD) / len(counts)
    bars = "".join(
        f'<rect x="{_PAD + i * step:.1f}" y="{_HEIGHT - _PAD - (_HEIGHT - 2 * _PAD) * count / tallest:.1f}" '
        f'width="{max(step - 1, 1):.1f}" height="{(_HEIGHT - 2 * _PAD) * count / tallest:.1f}" fill="#2ca02c">'
        f'<title>{edges[i]:.3g} to {edges[i + 1]:.3g}: {count}</title></rect>'
        for i, count in enumerate(counts))
    return (f'<figure><svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{_HEIGHT}" role="img">'
            f'<title>{html.escape(title)}</title><rect width="100%" height="100%" fill="white" stroke="#ccc"/>{bars}'
            f'<text x="4" y="{_PAD}" font-size="11">{tallest}</text>'
            f'<text x="{_PAD}" y="{_HEIGHT - 8}" font-size="11">{edges[0]:.3g}</text>'
            f'<text x="{_WIDTH - _PAD}" y="{_HEIGHT - 8}" font-size="11" text-anchor="end">{edges[-1]:.3g}</text>'
            f'</svg><figcaption>{html.escape(title)}</figcaption></figure>')


def _histograms(histograms: dict | None) -> list[str]:
    if not histograms:
        return []
    parts = [histogram_chart(f"ratings ({histograms.get('of', 'pairs')}: {histograms['pairs']})", histograms["edges"],
                             histograms["ratings"])]
    if histograms.get("predictions"):
        parts.append(histogram_chart("predictions for the same pairs", histograms["edges"], histograms["predictions"]))
    return parts


def _coverage(top_k: dict | None) -> list[str]:
    """The top-k's catalog coverage: items recommended to anyone, and to how many users each."""
    if not top_k:
        return []
    share = top_k["recommended_items"] / top_k["catalog_items"] if top_k["catalog_items"] else 0.0
    parts = [bar_chart(f"top-{top_k['k']} catalog coverage: {share:.1%} of the items are recommended to someone",
                       {"catalog": top_k["catalog_items"], "recommended": top_k["recommended_items"]}, unit="items")]
    reach = top_k.get("users_per_item")
    if reach:
        parts.append(histogram_chart("users each recommended item is recommended to", reach["edges"], reach["counts"]))
    return parts


def _metrics_table(metrics: dict, prefix: str = "") -> str:
    rows = []
    for name, value in (metrics or {}).items():
        if isinstance(value, dict):
            rows.append(_metrics_table(value, f"{prefix}{name} "))
        elif isinstance(value, (int, float)):
            rows.append(f"<tr><td>{html.escape(prefix + name)}</td><td>{value:.6g}</td></tr>")
    return "".join(rows)


def write_report(path: Path, title: str, summary: dict) -> Path:
    """Write ``report.html`` for a run ``summary`` (the JSON the pipeline writes) to ``path``."""
    history = summary.get("history") or []
    metric = next((key for key in (history[0] if history else {}) if key.startswith("train_")), None)
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p>status: {html.escape(str(summary.get('status', 'done')))}; "
             f"finished: {html.escape(str(summary.get('finished_at', '')))}</p>"]
    if metric:
        parts.append(line_chart(f"{metric} per epoch", [record.get(metric) for record in history]))
        for name in (key for key in history[0] if key.startswith("validation_") and not key.endswith(("_pairs", "_users"))):
            parts.append(line_chart(f"{name} per epoch (validation curve)", [record.get(name) for record in history]))
        parts.append(line_chart("seconds per epoch (epoch 1 includes building the blocks)",
                                [record.get("seconds") for record in history]))
    parts.append(bar_chart("seconds per stage", summary.get("seconds") or {}))
    parts.extend(_histograms(summary.get("histograms")))
    parts.extend(_coverage(summary.get("top_k")))
    table = _metrics_table({"metrics": summary.get("metrics"), "published": summary.get("published_metrics"),
                            "rows": summary.get("rows")})
    if table:
        parts.append(f"<table><tr><th>measure</th><th>value</th></tr>{table}</table>")
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>" + html.escape(title) + "</title>"
            "<style>body{font-family:sans-serif;max-width:600px;margin:2em auto}td,th{padding:2px 8px}</style>"
            "</head><body>" + "".join(p for p in parts if p) + "</body></html>\n")
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(page)
    os.replace(temporary, path)  # never half-written
    return path
