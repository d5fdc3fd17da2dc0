"""The README's figures, drawn again from the committed results folders (results/<name>):

    uv run python docs/figures.py

The stability-gap figure is `dvc plots show` of results/digits-stability/stability.csv with the
pipeline's own template (.dvc/plots/stream.json), rendered to PNG in headless Chromium (Debian's
package `chromium`)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIGURES = {  # figure -> (plot data, plot options, window size)
    "stability-gap.png": ("results/digits-stability/stability.csv",
                          ["--template", ".dvc/plots/stream.json", "-x", "step", "-y", "accuracy",
                           "--x-label", "updates on the new chunk",
                           "--title", "stability gap, class-incremental digits (presets/digits-stability.yaml)"],
                          "1120,560"),
}


def main() -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("error: headless Chromium draws the figures: install Debian's package chromium")
    for name, (data, options, size) in FIGURES.items():
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, "-m", "dvc", "plots", "show", data, *options, "-o", tmp], cwd=ROOT,
                           check=True, capture_output=True)
            subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                            "--disable-background-networking", "--disable-component-update", "--disable-sync",
                            "--proxy-server=127.0.0.1:9", f"--user-data-dir={tmp}/profile", "--hide-scrollbars",
                            "--virtual-time-budget=15000", f"--window-size={size}",
                            f"--screenshot={ROOT / 'docs' / name}", f"file://{tmp}/index.html"],
                           check=True, capture_output=True)
        print(f"docs/{name} from {data}")


if __name__ == "__main__":
    main()
