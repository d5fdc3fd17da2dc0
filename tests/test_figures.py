"""The README's figures (docs/figures.py): `dvc plots show`'s page of a kept results file, drawn
without vega-embed's action menu and, a plot having one revision, without the legend of revisions."""

import json
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

EMBEDDED = re.compile(r"var spec = (\{.*\});\s*vegaEmbed\('[^']+', spec(.*)\);")


@pytest.fixture(scope="module")
def figures():
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import figures
    finally:
        sys.path.pop(0)
    return figures


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> str:
    """What `dvc plots show` writes for the accuracy figure of a kept study (one revision)."""
    out = tmp_path_factory.mktemp("plots")
    subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "results/warmstart-mlp/accuracy.csv", "--template",
                    ".dvc/plots/by_method.json", "-x", "chunk", "-y", "test_acc", "-o", str(out)], cwd=ROOT,
                   check=True, capture_output=True)
    return (out / "index.html").read_text(encoding="utf-8")


def embedded(page: str) -> list[tuple[dict, str]]:
    """Each plot's vega-lite spec and the options given to vegaEmbed after it."""
    return [(json.loads(spec), options) for spec, options in EMBEDDED.findall(page)]


def by_revision(spec: dict) -> dict[str, dict]:
    """The encodings of `spec`'s layers by the `rev` field, by channel."""
    return {channel: encoding for layer in spec["layer"] for channel, encoding in layer["encoding"].items()
            if isinstance(encoding, dict) and encoding.get("field") == "rev"}


def test_a_figure_has_no_action_menu_and_no_legend_of_its_one_revision(figures, page):
    [(drawn, options)] = embedded(page)
    assert options == "" and {p["rev"] for p in drawn["data"]["values"]} == {"workspace"}
    assert "legend" not in by_revision(drawn)["strokeDash"]  # DVC's page shows `rev: workspace`
    [(figure, options)] = embedded(figures.for_figure(page))
    assert json.loads(options.removeprefix(",")) == {"actions": False}
    encodings = by_revision(figure)
    assert encodings["strokeDash"]["legend"] is None and "legend" not in encodings["detail"]  # detail has none
    for encoding in encodings.values():
        encoding.pop("legend", None)
    assert figure == drawn  # the rest as DVC drew it


def test_a_figure_of_two_revisions_keeps_their_legend(figures, page):
    two = page.replace('"rev": "workspace"', '"rev": "HEAD"', 1)
    [(figure, options)] = embedded(figures.for_figure(two))
    assert json.loads(options.removeprefix(",")) == {"actions": False}
    assert figure == embedded(two)[0][0]


def test_a_page_written_some_other_way_is_refused(figures):
    with pytest.raises(SystemExit, match="no `vegaEmbed"):
        figures.for_figure("<div><script>vegaEmbed('#a', spec, {});</script></div>")
