"""What a finished run says about itself: metrics, privacy spent, data, from its own files.

One reader for the bundle, the model card and the run report, so that the three never
disagree about a run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml


def _records(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def privacy_summary(config: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
    """Epsilon spent per site (the last record that reports it), delta, accountant, budget;
    ``{"enabled": False}`` for a run without sample-level DP."""
    privacy = config.get("privacy", {})
    out: dict[str, Any] = {"enabled": bool(privacy.get("enabled"))}
    central = privacy.get("central", {})
    if central.get("enabled"):
        last = next((r["central_dp"] for r in reversed(records) if "central_dp" in r), None)
        out["central"] = last
    if not out["enabled"]:
        return out
    out.update(
        delta=privacy.get("delta"),
        accountant=privacy.get("accountant"),
        target_epsilon=privacy.get("target_epsilon"),
        epsilon_budget=privacy.get("epsilon_budget"),
    )
    ledger = next((r["privacy"] for r in reversed(records) if "privacy" in r), None)
    if ledger is not None:  # federated: every site's epsilon
        out["epsilon_per_site"] = ledger["epsilon"]
        out["max_epsilon"] = ledger["max_epsilon"]
        if "audit" in ledger:  # privacy.audit: the audited site's bound beside its epsilon
            out["audit"] = ledger["audit"]
    return out


def data_description(config: dict[str, Any]) -> dict[str, Any]:
    """The data the adapters were trained on, as the config names it (no sample leaves)."""
    data, fed = config["data"], config.get("federation", {})
    return {
        "dataset": data["dataset"],
        "train_size": data["train_size"],
        "test_size": data["test_size"],
        "seed": data["seed"],
        "task": config["train"]["task"],
        "sites": fed.get("num_sites"),
        "partitioner": fed.get("partitioner"),
        "holdout": fed.get("holdout"),
    }


def run_facts(run_dir: Path) -> dict[str, Any]:
    """The facts of the finished run in ``run_dir``: kind, summary, records, privacy, data."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    summary_file = run_dir / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    records = _records(run_dir)
    kind = "federated" if "final" in summary or "round" in (records or [{}])[0] else "adapt"
    privacy = privacy_summary(config, records)
    if kind == "adapt" and summary.get("privacy"):
        privacy.update(epsilon=summary["privacy"]["epsilon"])
    final = summary.get("final") if kind == "federated" else summary.get("adapted")
    return {
        "kind": kind,
        "metrics": {"zero_shot": summary.get("zero_shot"), "final": final},
        "summary": summary,
        "privacy": privacy,
        "data": data_description(config),
        "records": records,
    }
