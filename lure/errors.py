"""User-facing errors: one paragraph on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer

# The stages' command-line options (typer), one definition each.
ParamsFile = Annotated[str, typer.Option("--params", help="the params file")]
RunSeed = Annotated[int, typer.Option("--seed", help="run seed, one of `seeds` in the params file")]


STOPPED = 3  # the exit status of a rank stopped because another rank failed


class LureError(Exception):
    """A problem with the user's input (params, data, paths).

    Bugs stay ordinary exceptions so that they keep their traceback.
    """


def reports_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a typer command so that a LureError becomes a message and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LureError as err:
            typer.echo(f"error: {err}", err=True)
            if "lure.distributed" in sys.modules:  # one rank of several: the others stop without a word
                sys.modules["lure.distributed"].record_failure()
            raise typer.Exit(2) from None
        except Exception:
            if "lure.distributed" in sys.modules and sys.modules["lure.distributed"].another_rank_failed():
                raise typer.Exit(STOPPED) from None  # its peer's error, e.g. a closed connection: said above
            raise

    return wrapper


def run_command(fn: Callable[..., None]) -> None:
    """Run `fn` as the command line of a stage module."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
    app.command()(reports_errors(fn))
    app()
