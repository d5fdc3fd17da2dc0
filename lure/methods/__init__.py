"""Ways to forget when a chunk arrives, one module each (lure.methods.base says what a method is).

Every module of this folder is loaded here, and every Method subclass with a `kind` registers
itself: adding a method is adding one module. A stage that runs methods depends on the whole
folder (dvc.yaml lists lure/methods).
"""

from __future__ import annotations

import importlib
import pkgutil

from pydantic import ValidationError

from lure.config import Params, error_lines
from lure.errors import LureError
from lure.methods.base import Boundary, Method, MethodHook, Reset

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

METHODS: dict[str, type[Method]] = Method.registry  # kind -> class, in the order of the modules

__all__ = ["METHODS", "Boundary", "Method", "MethodHook", "Reset", "load_method", "load_methods"]


def load_method(params: Params, name: str) -> Method:
    """The method of section `name` of the params file, its settings validated; a bad one is
    refused naming the key (methods.<name>.<key>)."""
    params.check_method(name)
    method = _validated(params, name)
    if isinstance(method, str):
        raise LureError(f"{params._source} is invalid:\n{method}")
    return method


def load_methods(params: Params) -> dict[str, Method]:
    """Every method section, validated; all bad keys named at once."""
    methods = {name: _validated(params, name) for name in params.methods}
    problems = [m for m in methods.values() if isinstance(m, str)]
    if problems:
        raise LureError(f"{params._source} is invalid:\n" + "\n".join(problems))
    return methods


def _validated(params: Params, name: str) -> Method | str:
    """Section `name` as its method, or the lines that say what is wrong with it."""
    kind = params.kind_of(name)
    if kind not in METHODS:
        return f"  methods.{name}: no method kind {kind!r} (set `kind:` to one of {', '.join(METHODS)})"
    try:
        return METHODS[kind].model_validate({"kind": kind, **params.methods[name]})
    except ValidationError as err:
        return error_lines(err, prefix=f"methods.{name}")
