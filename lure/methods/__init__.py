"""Ways to forget when a chunk arrives, one module each (lure.methods.base says what a method is).

Every module of this folder is loaded here, and every Method subclass with a `kind` registers
itself: adding a method is adding one module. A stage that runs methods depends on the whole
folder (dvc.yaml lists lure/methods).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from pydantic import ValidationError

from lure.config import Params, error_lines
from lure.errors import LureError
from lure.methods.base import Boundary, Method, MethodHook, Reset

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

METHODS: dict[str, type[Method]] = dict(sorted(Method.registry.items()))

__all__ = ["METHODS", "Boundary", "Method", "MethodHook", "Reset", "load_method", "load_methods"]


def load_method(params: Params, name: str) -> Method:
    """The method of section `name` of the params file, its settings validated; a bad one is
    refused naming the key (methods.<name>.<key>)."""
    params.check_method(name)
    section: dict[str, Any] = params.methods[name]
    kind = params.kind_of(name)
    if kind not in METHODS:
        raise LureError(f"{params._source} is invalid:\n  methods.{name}: no method kind {kind!r} (set `kind:` to one "
                        f"of {', '.join(METHODS)})")
    try:
        return METHODS[kind].model_validate({"kind": kind, **section})
    except ValidationError as err:
        raise LureError(f"{params._source} is invalid:\n{error_lines(err, prefix=f'methods.{name}')}") from None


def load_methods(params: Params) -> dict[str, Method]:
    """Every method section, validated; all bad keys named at once."""
    methods, problems = {}, []
    for name in params.methods:
        try:
            methods[name] = load_method(params, name)
        except LureError as err:
            problems.append(str(err).split("\n", 1)[1])
    if problems:
        raise LureError(f"{params._source} is invalid:\n" + "\n".join(problems))
    return methods
