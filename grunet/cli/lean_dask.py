"""Import ``dask.array`` without the optional integrations the ``grunet`` command never uses.

While ``dask.array`` initialises it imports xarray (with pandas) if installed, to recognise
xarray objects in ``da.from_array``, and ``scipy.fftpack``, to wrap its FFTs. grunet hands dask
neither, yet every command paid for both: 0.78 → 0.42-0.53 s for ``import dask.array`` where
xarray is installed (bioio, for the vendor formats, brings it). :class:`SkipDuringDaskArrayImport`
makes those two imports fail *only while dask.array itself initialises*, so dask takes its
"not installed" branches; imported later, by bioio or anyone else, both load as usual.

Installed by the command line only (:func:`grunet.cli.console`): a Python program that imports
grunet keeps dask's integrations, which its own code may rely on.
"""

from __future__ import annotations

import sys
from importlib.machinery import ModuleSpec

OPTIONAL_IMPORTS = frozenset({"xarray", "scipy.fftpack"})


class SkipDuringDaskArrayImport:
    """A ``sys.meta_path`` finder: ``OPTIONAL_IMPORTS`` raise ImportError while ``dask.array``
    initialises; any other time, and any other module, it defers to the next finder."""

    def find_spec(self, name: str, path=None, target=None) -> ModuleSpec | None:
        if name in OPTIONAL_IMPORTS and _initialising("dask.array"):
            raise ModuleNotFoundError(f"{name} is not needed by grunet's dask arrays", name=name)
        return None


def _initialising(name: str) -> bool:
    """Whether module ``name`` is being imported right now (its body is running)."""
    module = sys.modules.get(name)
    spec = getattr(module, "__spec__", None)
    return bool(getattr(spec, "_initializing", False))


def install() -> None:
    """Put the finder first on ``sys.meta_path`` unless dask.array is loaded already (once)."""
    if "dask.array" in sys.modules:
        return
    if not any(isinstance(f, SkipDuringDaskArrayImport) for f in sys.meta_path):
        sys.meta_path.insert(0, SkipDuringDaskArrayImport())
