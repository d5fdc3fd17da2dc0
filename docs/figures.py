"""The README's figures, drawn again from the committed results folders (results/<name>):

    uv run python docs/figures.py

Each figure is `dvc plots show` of a kept results file with one of the pipeline's own templates
(.dvc/plots/), rendered to PNG in headless Chromium (Debian's package `chromium`), without the
page's action menu and, a figure having one revision, without the legend of revisions. The paired
differences are computed here from the kept evaluations, as `lure results --paired` computes them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # lure, for the paired differences, when run as a script
FIGURES = {  # figure -> (plot data, plot options, window size)
    "stability-gap.png": ("results/digits-stability/stability.csv",
                          ["--template", ".dvc/plots/stream.json", "-x", "step", "-y", "accuracy",
                           "--x-label", "updates on the new chunk",
                           "--title", "stability gap, class-incremental digits (presets/digits-stability.yaml)"],
                          "1120,560"),
}
# "Does it reproduce?": per study, accuracy after every chunk (mean +- std over the seeds) and each
# method's paired difference from warm start with its 95% interval.
STUDIES = {  # results/<name> -> (title, metrics of the paired differences)
    "warmstart-mlp": ("warm-start gap, MLP (presets/cifar10-warmstart-mlp.yaml)", ("final_acc",)),
    "warmstart-cnn": ("warm-start gap, small CNN (presets/cifar10-warmstart-cnn.yaml)", ("final_acc",)),
    "chunks-mlp": ("8 chunks, full replay, MLP (presets/cifar10-chunks-mlp.yaml)",
                   ("final_acc", "ece", "ece_ts", "mca")),
    "fewshot-mlp": ("few-shot, 8 chunks, MLP (presets/cifar10-fewshot-mlp.yaml)", ("final_acc", "ece", "ece_ts")),
    # the newer papers' protocols (issue 28)
    "dash-chunks": ("DASH's chunks, to 99.9%, MLP (presets/cifar10-dash-chunks.yaml)", ("final_acc", "ece")),
    "fire-continual": ("FIRE's continual chunks, MLP (presets/cifar10-fire-continual.yaml)", ("final_acc", "ece")),
    "hare-tortoise": ("noisy warm start, MLP (presets/cifar10-hare-tortoise.yaml)", ("final_acc", "ece")),
}


def compared(name: str) -> int:
    """The methods a kept study sets beside warm start."""
    import yaml

    return len(yaml.safe_load((ROOT / "results" / name / "params.yaml").read_text())["methods"]) - 1


for name, (title, metrics) in STUDIES.items():
    FIGURES[f"reproduce-{name}-accuracy.png"] = (
        f"results/{name}/accuracy.csv",
        ["--template", ".dvc/plots/by_method.json", "-x", "chunk", "-y", "test_acc", "--x-label", "chunk",
         "--y-label", "test accuracy (mean ± std over the seeds)", "--title", title], "600,380")
    FIGURES[f"reproduce-{name}-paired.png"] = (
        ("paired", name, metrics),
        ["--template", ".dvc/plots/paired.json", "-x", "mean_difference", "-y", "method",
         "--x-label", "method − warm, paired by seed, with its 95% interval (accuracy: higher is better; "
         "ECE: lower is better)", "--title", title],
        f"720,{130 + compared(name) * 16 * (len(metrics) + 1)}")  # 16 px a row: methods x (metrics and a gap)


def paired_csv(name: str, metrics: tuple[str, ...], folder: Path) -> Path:
    """The kept study's paired differences from warm, as plot data in `folder`."""
    from lure.report import load_kept, paired_differences

    evaluations = load_kept(ROOT / "results" / name)
    lines = ["method,metric,mean_difference,lower,upper"]
    for metric in metrics:
        for method, d in paired_differences(evaluations, "warm", metric).items():
            lower, upper = d["ci95"] or ("", "")  # one seed: the mean alone
            lines.append(f"{method},{metric},{d['mean']},{lower},{upper}")
    path = folder / f"{name}-paired.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


# dvc plots show's page embeds each plot as `var spec = {JSON on one line}; vegaEmbed('#id', spec);`
EMBED = re.compile(r"var spec = (?P<spec>\{.*\});(?P<gap>\s*)vegaEmbed\('(?P<id>[^']+)', spec\);")
LEGENDS = {"color", "fill", "stroke", "shape", "size", "strokeDash", "strokeWidth", "opacity", "fillOpacity",
           "strokeOpacity", "angle"}  # the encoding channels with a legend


def revisions(node: object) -> set[str]:
    """The revisions (`rev`, added by DVC to every data point) in a vega-lite spec's data."""
    if isinstance(node, dict):
        own = {node["rev"]} if isinstance(node.get("rev"), str) else set()
        return own.union(*(revisions(v) for v in node.values()))
    return set().union(*(revisions(v) for v in node)) if isinstance(node, list) else set()


def drop_rev_legends(node: object) -> None:
    """No legend for an encoding by revision, anywhere in a vega-lite spec (the encodings stay)."""
    if isinstance(node, dict) and isinstance(node.get("encoding"), dict):  # not a data row's "encoding" column
        for channel, encoding in node["encoding"].items():
            if channel in LEGENDS and isinstance(encoding, dict) and encoding.get("field") == "rev":
                encoding["legend"] = None
    for value in node.values() if isinstance(node, dict) else node if isinstance(node, list) else ():
        drop_rev_legends(value)


def for_figure(page: str) -> str:
    """dvc plots show's page as a figure: without vega-embed's action menu (the "..." button), and
    without the legend of revisions (`rev: workspace`) in a plot of one revision."""
    def embed(match: re.Match) -> str:
        spec = json.loads(match["spec"])
        if len(revisions(spec)) <= 1:
            drop_rev_legends(spec)
        return f"var spec = {json.dumps(spec)};{match['gap']}vegaEmbed('{match['id']}', spec, {{\"actions\": false}});"

    figure, embedded = EMBED.subn(embed, page)
    if not embedded:
        sys.exit("error: no `vegaEmbed('#id', spec);` in dvc plots show's page: has DVC changed how it writes it?")
    return figure


def main() -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("error: headless Chromium draws the figures: install Debian's package chromium")
    for name, (data, options, size) in FIGURES.items():
        # dvc plots show reads plot data from inside the repository only
        with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory(dir=ROOT, prefix=".figure-") as inside:
            if isinstance(data, tuple):
                data = paired_csv(data[1], data[2], Path(inside)).relative_to(ROOT).as_posix()
            subprocess.run([sys.executable, "-m", "dvc", "plots", "show", data, *options, "-o", tmp], cwd=ROOT,
                           check=True, capture_output=True)
            page = Path(tmp) / "index.html"
            page.write_text(for_figure(page.read_text(encoding="utf-8")), encoding="utf-8")
            subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                            "--disable-background-networking", "--disable-component-update", "--disable-sync",
                            "--proxy-server=127.0.0.1:9", f"--user-data-dir={tmp}/profile", "--hide-scrollbars",
                            "--virtual-time-budget=15000", f"--window-size={size}",
                            f"--screenshot={ROOT / 'docs' / name}", f"file://{tmp}/index.html"],
                           check=True, capture_output=True)
        print(f"docs/{name} from {data}")


if __name__ == "__main__":
    main()
