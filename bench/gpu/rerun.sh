#!/usr/bin/env bash
# The device check again, for the parts that the first call did not finish well: copy what that
# call brought back into .gpu/previous/ (`uv run python bench/gpu/check.py failed .gpu/previous`
# lists those parts), then run this with .gpu carried, as check.sh.
exec bash "$(dirname "$0")/check.sh" --rerun-from .gpu/previous "$@"
