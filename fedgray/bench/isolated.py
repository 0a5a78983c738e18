"""(b) The isolated runtime against in-process sealing, on the same sealed artifact.

Starting the runtime means a fresh interpreter importing torch, which on a busy machine
takes longer than the whole comparison: :class:`RuntimeStart` seals the artifact and
starts the runtime in a background thread when the benchmark begins, so that start-up
overlaps the other sections and only the steps are timed.
"""

from __future__ import annotations

import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

import torch

from fedgray.backbone import SealedBackbone, load_artifact
from fedgray.backbone.runtime.isolated import IsolatedBackbone
from fedgray.owner.keys import generate_keys
from fedgray.owner.seal import seal

from .sections import SITE_MODEL, Figure, Sizes, base_model, timed
from .steps import MethodStep, task_data
from .timing import paired_ratio


class RuntimeStart:
    """A gray artifact of ``model`` (random weights), opened in-process and (in the
    background) by an isolated runtime; both closed on exit."""

    def __init__(self, model: str = SITE_MODEL) -> None:
        self.model = model

    def __enter__(self) -> RuntimeStart:
        self._tmp = tempfile.TemporaryDirectory(prefix="fgbench")
        keys = generate_keys(Path(self._tmp.name) / "keys")
        artifact = Path(self._tmp.name) / "backbone.fgs"
        seal(
            base_model(self.model)[0],
            artifact,
            name=self.model,
            level="gray",
            signing_key=keys.signing_key,
            content_key=keys.content_key,
        )
        self.local: SealedBackbone = load_artifact(
            artifact, verify_key=keys.verify_key, content_key=keys.content_key
        )
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._remote: Future[IsolatedBackbone] = self._pool.submit(
            IsolatedBackbone,
            artifact,
            verify_key=keys.verify_key,
            content_key=keys.content_key,
            threads=torch.get_num_threads(),
        )
        return self

    def remote(self) -> IsolatedBackbone:
        """The runtime, once it has greeted (its start-up error, if it failed)."""
        return self._remote.result()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        try:
            if self._remote.exception() is None:
                self._remote.result().close()
        finally:
            self._pool.shutdown()
            self._tmp.cleanup()


def isolation(start: RuntimeStart, sizes: Sizes) -> list[Figure]:
    """A DGA step with the backbone in the isolated runtime against in-process."""
    data = task_data(start.local, sizes.site_batch)
    steps = {
        "local": MethodStep(start.local, "dga", data),
        "remote": MethodStep(start.remote(), "dga", data),
    }
    times = timed(dict(steps), sizes)
    section = f"privacy and isolation ({start.model}, DGA, batch {sizes.site_batch})"
    return [
        Figure(
            section,
            "isolated runtime / in-process step",
            paired_ratio(times["remote"], times["local"]),
            goal=1.2,
            note="backbone in a spawned child, fixed wire schema",
        ),
    ]
