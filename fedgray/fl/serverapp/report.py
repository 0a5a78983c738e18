"""What a finished federated run leaves behind, and its comparison with zero-shot."""

from __future__ import annotations

from typing import Any

from fedgray.backbone.budget import SPEND_KEYS
from fedgray.config import Config, PrivacyConfig
from fedgray.fl.common.records import from_record
from fedgray.fl.common.selection_rules import SELECTION_SPLITS
from fedgray.fl.serverapp.failures import FederationError
from fedgray.fl.serverapp.selection import scores_validation
from fedgray.fl.serverapp.server import FederationResult, headline
from fedgray.plots import plot_curve
from fedgray.privacy.audit_bound import exceeded
from fedgray.privacy.planted import AUDITED_PARTITION
from fedgray.run_report import write_report
from fedgray.runs import RunFolder, save_adapters
from fedgray.tasks import TASKS
from fedgray.tracking import write_tracking

COMPARED = ("i2t_r1", "t2i_r1", "r1_mean", "accuracy")
ON_TEST = "the server's test split, read once after the last round"
ON_VALIDATION = SELECTION_SPLITS["validation"].described
ON_SITES = SELECTION_SPLITS["sites"].described


def compared(scores: dict[str, float]) -> dict[str, float | None]:
    """Every metric of ``scores``, and each of :data:`COMPARED` (None where not measured)."""
    return {k: None for k in COMPARED} | dict(scores)


def finish(run: RunFolder, config: Config, result: FederationResult) -> dict[str, Any]:
    """Write the final global adapters, the learning curve, ``summary.json`` and ``report.html``.

    ``final`` holds the metrics of the round whose adapters the run ends with (the last, or
    with ``federation.select: best`` the one chosen on ``federation.select_on``; its
    ``selected_round``) and ``zero_shot`` those of the initial adapters, both on
    ``evaluated_on``: the server's test split, scored once (:attr:`FederationResult.test`),
    or without ``federation.central_eval`` the sites' held-out data. ``curve_on`` names the
    split of every per-round figure (``metrics.jsonl``, the learning curve); with it,
    ``validation`` holds the same two rounds' validation figures.
    """
    fed, metric = config.federation, TASKS[config.train.task].metric
    save_adapters(
        run.path / "adapters.pt",
        from_record(result.arrays),
        backbone=config.backbone.name,
        method=config.method.name,
        personal=list(fed.personal),
        rounds=fed.num_rounds,
        round=result.selected,
    )
    first = result.records[0]
    final = next(r for r in result.records if r["round"] == result.selected)
    curve_on = ON_VALIDATION if scores_validation(config.federation) else ON_SITES
    plot_curve(
        [r["round"] for r in result.records],
        [headline(config.train, r) for r in result.records],
        run.path / "curve.png",
        xlabel="round",
        ylabel=f"{metric} ({curve_on})",
        baseline=headline(config.train, first),
        title=f"{fed.strategy} · {fed.num_sites} sites · {config.data.dataset}",
    )
    trained = [r for r in result.records if r["round"] > 0]
    test = result.test
    summary = {
        "evaluated_on": ON_TEST if test else ON_SITES,
        "zero_shot": compared(test["zero_shot"] if test else first["federated"]),
        "final": compared(test["final"] if test else final["federated"]),
        "curve_on": curve_on,
        "select": fed.select,
        # select: last reads no split to choose (the last round is the final one)
        "selected_on": None if fed.select == "last" else SELECTION_SPLITS[fed.select_on].described,
        "selected_round": result.selected,
        "bytes_per_site_per_round": max(
            (r["bytes_down"] + r["bytes_up"] for r in trained), default=0
        ),
        "backbone_bytes": result.backbone_bytes,
        "seconds": sum(r["seconds"] for r in result.records),
        "rejections": [vars(r) for r in result.rejections],
    }
    if "validation" in final:
        summary["validation"] = {
            "zero_shot": compared(first["validation"]),
            "final": compared(final["validation"]),
        }
    for key in SPEND_KEYS:  # what all sites' training spent of their backbone budgets
        if spent := sum(r.get(key, 0) for r in trained):
            summary[key] = spent
    if config.privacy.audit:
        last = result.records[-1].get("privacy", {})
        summary["audit"] = last.get("audit")  # None: the audited site sent no evidence
    run.write_json("summary.json", summary)
    write_report(run.path, metric=metric)
    write_tracking(run.path, config.output.track, result.records)
    return summary


def comparison(summary: dict[str, Any]) -> list[str]:
    """Zero-shot vs final metrics, and traffic vs backbone size, as printable lines."""
    where = summary["evaluated_on"]
    if summary.get("select", "last") != "last":
        chosen_on = summary.get("selected_on", ON_SITES)
        where += f"; final: round {summary['selected_round']}, best on {chosen_on}"
    lines = [f"{'metric':<10}{'zero-shot':>11}{'federated':>11}   ({where})"]
    for key in COMPARED:
        before, after = summary["zero_shot"][key], summary["final"][key]
        if before is not None and after is not None:
            lines.append(f"{key:<10}{before:>11.1f}{after:>11.1f}")
    sent, size = summary["bytes_per_site_per_round"], summary["backbone_bytes"]
    lines.append(
        f"traffic: {sent / 1e3:.1f} KB per site per round (down + up) = "
        f"{sent / size:.3%} of the backbone's {size / 1e6:.1f} MB"
    )
    if "queries" in summary:
        lines.append(f"queries: {summary['queries']:,} backbone queries by the sites' training")
    if "samples" in summary:
        lines.append(
            f"budget: {summary['samples']:,} samples forwarded and "
            f"{summary.get('gradients', 0):,} input gradients by the sites' training"
        )
    return lines


def check_audit(privacy: PrivacyConfig, summary: dict[str, Any]) -> None:
    """Under ``privacy.audit``, end the run with a one-line :class:`FederationError` (its
    folder already written) when the audited site's bound exceeds its epsilon, when the
    batches it drew refute the accountant's Poisson sampling, or when that site never sent
    the evidence (it did not train in the last round)."""
    if not privacy.audit:
        return
    audit = summary.get("audit")
    if audit is None:
        raise FederationError(
            f"privacy.audit: site {AUDITED_PARTITION} sent no audit evidence from the last round "
            "(it did not train in it): no bound to report"
        )
    if audit["lower_bound"] > audit["epsilon"]:
        raise FederationError(
            exceeded(
                lower_bound=audit["lower_bound"],
                epsilon=audit["epsilon"],
                delta=privacy.delta,
                confidence=audit["confidence"],
            )
            + f" at site {audit['site']}"
        )
    if audit["sampling"] is not None:
        raise FederationError(f"{audit['sampling']} at site {audit['site']}")
