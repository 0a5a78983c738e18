"""Read a pickled numpy array without letting the pickle run anything else.

A pickle names the callables that rebuild its objects, and ``pickle.load`` imports and calls
whatever it names (``os.system`` included). Datasets shipped as pickles are read here by
an unpickler that resolves exactly the three names numpy's own array pickles use, and
nothing else; what it returns must be a plain numeric array.
"""

from __future__ import annotations

import gzip
import io
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def _reconstruct() -> Callable[..., Any]:
    """numpy's array reconstructor, from where this numpy keeps it (numpy 2: ``_core``)."""
    try:
        from numpy._core.multiarray import _reconstruct as found
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct as found  # type: ignore[no-redef]
    return found


_ADMITTED: dict[tuple[str, str], Callable[[], Any]] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # as numpy 1.x pickles name it
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # as numpy 2.x pickles name it
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
}


class _ArrayUnpickler(pickle.Unpickler):
    """Resolves only numpy's array reconstruction; any other name is refused."""

    def find_class(self, module: str, name: str) -> Any:
        admitted = _ADMITTED.get((module, name))
        if admitted is None:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: only numpy arrays may be unpickled"
            )
        return admitted()


def load_array(path: Path) -> np.ndarray:
    """The numeric array pickled (gzipped) in ``path``; a pickle that names anything but
    numpy's reconstruction, or holds anything but a numeric array, is refused."""
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    try:
        array = _ArrayUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError as error:
        raise ValueError(f"{path}: {error}") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "uib":
        kind = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
        raise ValueError(f"{path}: expected a numeric numpy array, found {kind}")
    return array
