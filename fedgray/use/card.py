"""The model card: a bundle's facts as Markdown, for the people who receive it."""

from __future__ import annotations

from typing import Any


def _metric_rows(metrics: dict[str, Any]) -> list[str]:
    zero, final = metrics.get("zero_shot") or {}, metrics.get("final") or {}
    rows = ["| metric | zero-shot | adapted |", "|---|---|---|"]
    for key in final:
        if final[key] is not None:
            before = zero.get(key)
            shown = f"{before:.1f}" if isinstance(before, (int, float)) else "-"
            rows.append(f"| {key} | {shown} | {final[key]:.1f} |")
    return rows


def _privacy_lines(privacy: dict[str, Any]) -> list[str]:
    if not privacy.get("enabled"):
        lines = ["No sample-level differential privacy: the adapters carry no DP guarantee."]
    else:
        lines = [
            f"DP-SGD at every site, delta {privacy.get('delta')}, accountant "
            f"{privacy.get('accountant')}, target epsilon {privacy.get('target_epsilon')}, "
            f"budget {privacy.get('epsilon_budget')}.",
        ]
        if "max_epsilon" in privacy:
            lines.append(f"Largest epsilon spent by a site: {privacy['max_epsilon']:.4f}.")
            lines += ["", "| site | epsilon |", "|---|---|"]
            lines += [f"| {s} | {e:.4f} |" for s, e in privacy["epsilon_per_site"].items()]
        elif "epsilon" in privacy:
            lines.append(f"Epsilon spent: {privacy['epsilon']:.4f}.")
    if privacy.get("central"):
        central = privacy["central"]
        lines += ["", f"Site-level (central) DP: {central}."]
    return lines


def model_card(manifest: dict[str, Any]) -> str:
    """Markdown describing the bundle ``manifest`` (as :func:`fedgray.use.bundle.export`
    writes it): what it adapts, on what, how well, at what privacy cost, how to use it."""
    config, backbone, data = manifest["config"], manifest["backbone"], manifest["data"]
    method = config["method"]["name"]
    fed = config.get("federation", {})
    trained = (
        f"federated over {fed.get('num_sites')} sites, {fed.get('num_rounds')} rounds "
        f"({fed.get('strategy')}, {fed.get('partitioner')} partition)"
        if manifest["kind"] == "federated"
        else "on one site (`fedgray adapt`)"
    )
    identity = ", ".join(f"{k}: {v}" for k, v in backbone.items())
    held, use = "the adapters", "BUNDLE"
    if manifest["adapters"]["file"] is None:
        held = (
            "one site's personal adapters only, which go over the global adapters with "
            f"SHA-256 `{manifest['adapters']['sha256']}` (not in it)"
        )
        use = "RUN_OR_BUNDLE_OF_THOSE_ADAPTERS --personal BUNDLE"
    lines = [
        f"# Model card: {method} adapters for {backbone['name']}",
        "",
        f"Exported {manifest['created_at']}; signed by the key with SHA-256 "
        f"`{manifest['signer_sha256']}` (raw Ed25519 public key).",
        "",
        "## What it is",
        "",
        f"Adapters of method `{method}` for the sealed backbone `{backbone['name']}` at "
        f"access level `{backbone['level']}`, trained {trained}. The bundle holds "
        f"{held}; the backbone is not in it and is named by its identity: {identity}.",
        "",
        "## Data",
        "",
        f"Task `{data['task']}` on `{data['dataset']}`: {data['train_size']} training samples "
        f"in all, {data['test_size']} test samples (data seed {data['seed']}).",
        "",
        "## Metrics (percent)",
        "",
        *_metric_rows(manifest["metrics"]),
        "",
        "## Privacy",
        "",
        *_privacy_lines(manifest["privacy"]),
        "",
        "## Use",
        "",
        "```bash",
        f"fedgray predict {use} IMAGES/ --verify-key SIGNER.pem --set backbone.artifact=... "
        "--set backbone.verify_key=... --set backbone.content_key=...",
        f"fedgray evaluate {use} LABELLED/ --verify-key SIGNER.pem",
        "```",
        "",
        "## Limits",
        "",
        "Figures are the run's own, on its test data; they say nothing about other data. "
        "This card is not signed: `bundle.json` and `bundle.sig` are.",
        "",
    ]
    return "\n".join(lines)
