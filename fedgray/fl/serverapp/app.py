"""The fedgray ServerApp (Flower Message API)."""

from __future__ import annotations

from collections.abc import Callable
from logging import INFO
from pathlib import Path

from flwr.app import Context
from flwr.common import log
from flwr.serverapp import Grid, ServerApp

from fedgray.config import Config
from fedgray.fl.common.cache import forget_backbones
from fedgray.fl.run_config import resolve_config
from fedgray.fl.serverapp.checkpoint import CHECKPOINT
from fedgray.fl.serverapp.preflight import check_resume
from fedgray.fl.serverapp.progress import PROGRESS, record_error, teed
from fedgray.fl.serverapp.report import check_audit, finish
from fedgray.fl.serverapp.server import Echo, FederationResult, federate
from fedgray.runs import RunFolder


def make_server_app(
    config: Config | None = None,
    *,
    run_dir: Path | None = None,
    echo: Echo = print,
    on_result: Callable[[FederationResult, dict], None] | None = None,
    on_error: Callable[[BaseException], None] | None = None,
) -> ServerApp:
    """A ServerApp for ``config`` (defaults when None), overridden by ``context.run_config``.

    It writes into ``run_dir`` (a fresh folder under ``output.root`` when None); a folder
    holding a checkpoint is resumed, once :func:`~fedgray.fl.serverapp.preflight.check_resume` has
    accepted the settings (before anything in it changes). ``on_result`` receives the result
    and summary in-process; ``on_error`` the exception that ended the run (Flower's
    simulation would only log it), which is raised when ``on_error`` is None. Every line
    said, and the error that ended the run, also go to the run's ``progress.log``
    (:mod:`~fedgray.fl.serverapp.progress`).
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        progress: Path | None = None
        try:
            resolved = resolve_config(config, context.run_config)
            if run_dir is None:
                run = RunFolder(resolved.output.root, resolved.output.name, prefix="federated")
            else:
                run = RunFolder(run_dir.parent, run_dir.name)
            progress = run.path / PROGRESS
            if (run.path / CHECKPOINT).is_file():
                check_resume(resolved, run.path)
            run.save_config(resolved)
            forget_backbones()  # each run spends from its own backbone budget
            result = federate(grid, resolved, run, echo=teed(echo, progress))
            summary = finish(run, resolved, result)
            check_audit(resolved.privacy, summary)
        except BaseException as error:
            if progress is not None:
                record_error(progress, error)
            if on_error is None:
                raise
            on_error(error)
            return
        if on_result is not None:
            on_result(result, summary)

    return app


def _flower_log(line: str) -> None:
    log(INFO, line)


app = make_server_app(echo=_flower_log)
