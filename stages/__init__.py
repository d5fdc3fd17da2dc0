"""DVC stage entry points, one module per stage (see dvc.yaml). Each parses its arguments, loads
params.yaml, calls one library function in `lure` and writes its outputs (lure.paths) atomically."""
