"""DVC stage entry points, one module per stage (see dvc.yaml). Each is a thin typer command:
read params.yaml, call the library in `lure`, write its outputs atomically."""
