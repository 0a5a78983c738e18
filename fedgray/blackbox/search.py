"""CMA-ES over a low-dimensional point, one generation at a time (the ``cma`` package)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


class CmaSearch:
    """Derivative-free minimisation of ``fitness(z)`` from ``mean`` (default ``z = 0``) with
    step size ``sigma``, each coordinate kept in ``[-bound, bound]`` (0: unbounded).

    Deterministic from ``seed`` without touching numpy's global generator, and quiet: no
    console output and no log files.
    """

    def __init__(
        self,
        dim: int,
        *,
        sigma: float,
        popsize: int,
        seed: int,
        mean: torch.Tensor | None = None,
        bound: float = 0.0,
    ) -> None:
        import cma

        rng = np.random.default_rng(seed)
        options = {
            "popsize": popsize,
            "seed": np.nan,  # leave numpy's global generator alone; samples come from `rng`
            "randn": lambda *shape: rng.standard_normal(shape),
            "verbose": -9,
            "verb_disp": 0,
            "verb_log": 0,
        }
        if bound > 0:
            options["bounds"] = [-bound, bound]
        start = np.zeros(dim) if mean is None else mean.detach().cpu().double().numpy()
        self._es = cma.CMAEvolutionStrategy(start, sigma, options)

    @property
    def popsize(self) -> int:
        """Candidates per generation."""
        return int(self._es.popsize)

    @property
    def mean(self) -> torch.Tensor:
        """The search distribution's mean: the current best estimate of ``z``."""
        return torch.as_tensor(self._es.mean, dtype=torch.float32)

    @property
    def sigma(self) -> float:
        """The search distribution's overall step size."""
        return float(self._es.sigma)

    def generation(self, fitness: Callable[[torch.Tensor], float]) -> list[float]:
        """Evaluate one population (lower fitness is better) and update the distribution."""
        candidates = self._es.ask()
        values = [float(fitness(torch.as_tensor(z, dtype=torch.float32))) for z in candidates]
        self._es.tell(candidates, values)
        return values

    def sample_mean(self) -> torch.Tensor:
        """The mean of a fresh population drawn from the distribution, within the bounds
        (not evaluated): the point the authors' code moves the prompt to after each step.

        Drawn as ``ask`` draws (same sampler and generator, same bound transform) but
        without ``ask``, which would hand this population the directions CMA-ES injects
        into the next evaluated one (its selective mirrors)."""
        es = self._es
        steps = es.sigma_vec * np.asarray(es.sm.sample(self.popsize))
        repair = es.boundary_handler.repair if es.boundary_handler.has_bounds() else None
        points = [es.gp.pheno(es.mean + es.sigma * step, into_bounds=repair) for step in steps]
        return torch.as_tensor(np.mean(points, axis=0), dtype=torch.float32)
