"""User-facing errors: one paragraph on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import functools
import os
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
            if first_to_fail():  # one rank of several: the first failure speaks for every rank
                typer.echo(f"error: {err}", err=True)
                raise typer.Exit(2) from None
            raise typer.Exit(STOPPED) from None
        except Exception:
            if first_to_fail():
                raise  # a bug: its traceback
            raise typer.Exit(STOPPED) from None  # a consequence of another rank's failure, said by it

    return wrapper


def first_to_fail() -> bool:
    """Whether this process's failure is the first of its stage's ranks (lure.distributed), or
    this is the only process. Looked up, not imported: the stages that never train do without
    torch's ~4 s import."""
    distributed = sys.modules.get("lure.distributed")
    return distributed is None or distributed.first_to_fail()


def run_command(fn: Callable[..., None]) -> None:
    """Run `fn` as the command line of a stage module. A stage that succeeded leaves at once: its
    outputs are written, closed and renamed into place by then, and the interpreter's teardown of
    torch's modules would add ~0.5 s to every stage."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
    app.command()(reports_errors(fn))
    try:
        app()
    except SystemExit as done:
        if done.code not in (0, None) or int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise  # a failure, or a rank under torchrun, which leaves its process group at exit
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
