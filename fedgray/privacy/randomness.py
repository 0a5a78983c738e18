"""Where DP-SGD's randomness comes from, and Opacus' checks around it.

Default (``privacy.secure_mode: false``): the Gaussian noise comes from torch's global
generator and Poisson sampling from a generator seeded with the trainer's seed; both are
reproducible from the run's seeds (``train.seed``; at sites, federation seed, round and
partition), which is what makes runs repeatable and what an attacker who knows the seeds
could use to strip the noise. Opacus warns about this; so does fedgray.

``privacy.secure_mode: true``: Opacus' secure mode, as ``PrivacyEngine(secure_mode=True)``
sets it up: noise and sampling from ``torchcsprng``'s generator over ``/dev/urandom``, and
noise drawn as Opacus' sum of Gaussians that resists floating-point attacks. It needs the
``torchcsprng`` package; without it a run stops with one line rather than fall back.
"""

from __future__ import annotations

import warnings
from itertools import chain

import torch

from fedgray.config_schema import ConfigError

INSECURE = (
    "Secure RNG turned off (privacy.secure_mode: false): DP-SGD's noise and sampling come from "
    "torch's pseudo-random generators, reproducible from the run's seeds. This is fine for "
    "experiments; turn privacy.secure_mode on and retrain before releasing adapters."
)


def secure_generator() -> torch.Generator:
    """Opacus' secure generator (torchcsprng over ``/dev/urandom``), or a one-line error."""
    try:
        import torchcsprng as csprng  # type: ignore[import-not-found]
    except ImportError:
        raise ConfigError(
            "privacy.secure_mode: needs the torchcsprng package (Opacus' cryptographically "
            "secure generator), which is not installed"
        ) from None
    return csprng.create_random_device_generator("/dev/urandom")


def dp_generator(secure_mode: bool) -> torch.Generator | None:
    """The generator for noise and sampling: secure, or None (seeded torch generators) after
    Opacus' warning."""
    if secure_mode:
        return secure_generator()
    warnings.warn(INSECURE, UserWarning, stacklevel=3)
    return None


def check_owned_parameters(module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Opacus' ``make_private`` check: every optimised parameter belongs to ``module`` (a
    parameter outside it would get no per-sample clipping, only noise)."""
    owned = {id(p) for p in module.parameters()}
    params = chain.from_iterable(group["params"] for group in optimizer.param_groups)
    if any(id(p) not in owned for p in params):
        raise ValueError("Module parameters are different than optimizer Parameters")
