"""Public names of a package imported on first use (PEP 562), so that importing one light
module of the package (a parameter spec, the release list) does not import Dask."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(namespace: dict, exports: dict[str, str]) -> tuple[Callable, Callable]:
    """``__getattr__`` and ``__dir__`` for a package whose public ``name`` lives in module
    ``exports[name]`` (a module name equal to ``package.name`` exports the module itself).
    ``namespace`` is the package's ``globals()``; a name, once imported, is stored there."""

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {namespace['__name__']!r} has no attribute {name!r}")
        module = importlib.import_module(exports[name])
        value = module if exports[name] == f"{namespace['__name__']}.{name}" else getattr(module, name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *exports})

    return __getattr__, __dir__
