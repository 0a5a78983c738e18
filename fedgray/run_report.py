"""``report.html``: one self-contained page per run folder, the page an operator opens.

It reads only the run's own files (through :func:`fedgray.use.facts.run_facts`, the reader
the bundle and model card use) and loads nothing from the network: the curve is inline SVG,
the PNG plot is embedded as base64, and there is no script or external style sheet.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedgray.use.facts import run_facts

REPORT = "report.html"
_STYLE = (
    "body{font-family:sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
    "table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.2rem .5rem;"
    "text-align:right}th{background:#f3f3f3}pre{background:#f7f7f7;padding:.5rem;overflow:auto}"
    ".over{color:#b00}"
)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else "-"
    return html.escape("-" if value is None else str(value))


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], *, id_: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f'<table id="{id_}"><tr>{head}</tr>{body}</table>'


def svg_curve(xs: Sequence[float], ys: Sequence[float], *, label: str) -> str:
    """A line chart as inline SVG; each point carries its value (``data-x``, ``data-y``)."""
    width, height, pad = 480, 240, 36
    points = [(x, y) for x, y in zip(xs, ys, strict=True) if math.isfinite(y)]
    if not points:
        return "<p>No values to draw.</p>"
    lo_x, hi_x = min(p[0] for p in points), max(p[0] for p in points)
    lo_y, hi_y = min(p[1] for p in points), max(p[1] for p in points)
    span_x, span_y = (hi_x - lo_x) or 1.0, (hi_y - lo_y) or 1.0

    def at(x: float, y: float) -> tuple[float, float]:
        return (
            pad + (x - lo_x) / span_x * (width - 2 * pad),
            height - pad - (y - lo_y) / span_y * (height - 2 * pad),
        )

    path = " ".join(f"{a:.1f},{b:.1f}" for a, b in (at(x, y) for x, y in points))
    dots = "".join(
        f'<circle cx="{at(x, y)[0]:.1f}" cy="{at(x, y)[1]:.1f}" r="3" data-x="{x:g}" '
        f'data-y="{y:.6g}"><title>{x:g}: {y:.4g}</title></circle>'
        for x, y in points
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="{html.escape(label)}">'
        f'<polyline fill="none" stroke="steelblue" stroke-width="2" points="{path}"/>{dots}'
        f'<text x="{pad}" y="14" font-size="12">{html.escape(label)}: {lo_y:.4g} to {hi_y:.4g}'
        "</text></svg>"
    )


def _headline(record: dict[str, Any], metric: str) -> float:
    """A record's figure for the curve: a federated round's on the server's validation split
    (else the sites' held-out data); an ``adapt`` record's own (where ``validation`` is a
    number: CraFT's held-out score)."""
    scores = (record.get(k) for k in ("validation", "federated"))
    scope = next((s for s in scores if isinstance(s, dict) and s), record)
    value = scope.get(metric)
    return float(value) if isinstance(value, (int, float)) else float("nan")


def _split_note(lead: str, split: str | None) -> str:
    """Which data a table's or curve's numbers come from (nothing where the run's summary
    does not say, as in ``fedgray adapt``'s)."""
    return (
        "" if split is None else f'<p class="split">{html.escape(lead)} {html.escape(split)}.</p>'
    )


def _privacy_section(privacy: dict[str, Any]) -> str:
    if not privacy.get("enabled"):
        return "<p>No sample-level differential privacy in this run.</p>"
    limit = privacy.get("epsilon_budget") or privacy.get("target_epsilon")
    sites = privacy.get("epsilon_per_site") or (
        {"this site": privacy["epsilon"]} if "epsilon" in privacy else {}
    )
    rows = []
    for site, epsilon in sites.items():
        share = f"{epsilon / limit:.0%}" if limit else "-"
        rows.append([site, float(epsilon), limit, share])
    over = [site for site, eps in sites.items() if limit and eps > limit]
    note = f'<p class="over">Above the budget: {html.escape(", ".join(over))}</p>' if over else ""
    return (
        f"<p>delta {_cell(privacy.get('delta'))}, accountant "
        f"{_cell(privacy.get('accountant'))}</p>"
        + _table(["site", "epsilon", "budget", "share of budget"], rows, id_="privacy")
        + note
        + _audit_section(privacy.get("audit"))
    )


def _audit_section(audit: dict[str, Any] | None) -> str:
    """The audited site's empirical lower bound beside its accountant's epsilon, and the
    p-value of the batches it drew under the accountant's Poisson sampling."""
    if audit is None:
        return ""
    verdict = "passed"
    if audit["lower_bound"] > audit["epsilon"]:
        verdict = "FAILED: the bound exceeds epsilon"
    elif audit.get("sampling") is not None:
        verdict = "FAILED: the batches drawn are not Poisson-sampled at the accountant's rate"
    row = [
        audit["site"],
        f"{audit['correct']} of {audit['guesses']}",
        audit["canaries"],
        float(audit["lower_bound"]),
        float(audit["epsilon"]),
        audit.get("batches"),  # none in runs from before the sampler check: "-"
        audit.get("sampling_p_value"),
        verdict,
    ]
    header = [
        "site",
        "right guesses",
        "canaries",
        "empirical lower bound",
        "epsilon",
        "batches checked",
        "sampling p-value",
        "audit",
    ]
    return f"<h3>Privacy audit ({audit['confidence']:.0%} confidence)</h3>" + _table(
        header, [row], id_="audit"
    )


def write_report(run_dir: Path, *, metric: str) -> Path:
    """Write ``run_dir/report.html`` from the run's files; ``metric``: the task's metric."""
    facts = run_facts(run_dir)
    records, summary = facts["records"], facts["summary"]
    axis = "round" if facts["kind"] == "federated" else "step"
    xs = [float(r.get(axis, r.get("queries", 0))) for r in records]
    ys = [_headline(r, metric) for r in records]
    final, zero = facts["metrics"]["final"] or {}, facts["metrics"]["zero_shot"] or {}
    compared = [[k, zero.get(k), final.get(k)] for k in final if final.get(k) is not None]
    parts = [
        f"<h1>fedgray run {html.escape(run_dir.name)}</h1>",
        f"<p>{html.escape(facts['kind'])} run on {html.escape(str(facts['data']['dataset']))}, "
        f"task {html.escape(str(facts['data']['task']))}</p>",
        "<h2>Result</h2>",
        _split_note("Scored on", summary.get("evaluated_on")),
        _table(["metric", "zero-shot", "final"], compared, id_="summary"),
        f"<h2>Learning curve ({html.escape(metric)} by {axis})</h2>",
        _split_note("Every point on", summary.get("curve_on")),
        svg_curve(xs, ys, label=metric),
    ]
    png = run_dir / "curve.png"
    if png.is_file():
        encoded = base64.b64encode(png.read_bytes()).decode()
        parts.append(f'<p><img alt="curve.png" src="data:image/png;base64,{encoded}"></p>')
    if facts["kind"] == "federated":
        rows = [
            [
                r["round"],
                r.get("sites_trained"),
                ", ".join(r.get("failed_sites") or []) or "-",
                r.get("bytes_down"),
                r.get("bytes_up"),
                r.get("train_loss"),
                (r.get("federated") or {}).get(metric),
                (r.get("validation") or {}).get(metric),
                r.get("seconds"),
            ]
            for r in records
        ]
        header = [
            "round",
            "sites trained",
            "failed sites",
            "bytes down / site",
            "bytes up / site",
            "train loss",
            f"sites' {metric}",
            f"validation {metric}",
            "s",
        ]
        parts += ["<h2>Rounds, sites and traffic</h2>", _table(header, rows, id_="rounds")]
        if summary.get("bytes_per_site_per_round"):
            parts.append(
                f"<p>Traffic: {summary['bytes_per_site_per_round']:,} bytes per site per round "
                f"(down + up), backbone {summary.get('backbone_bytes', 0):,} bytes.</p>"
            )
    parts += ["<h2>Privacy</h2>", _privacy_section(facts["privacy"])]
    config = (run_dir / "config.yaml").read_text()
    parts += ["<h2>Config</h2>", f'<pre id="config">{html.escape(config)}</pre>']
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>fedgray run {html.escape(run_dir.name)}</title><style>{_STYLE}</style>"
        f"</head><body>{''.join(parts)}</body></html>\n"
    )
    path = run_dir / REPORT
    path.write_text(page, encoding="utf-8")
    return path
