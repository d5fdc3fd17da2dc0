"""`lure pipelines`: each method's pipeline file written from params.yaml and the template, the
files of methods gone removed with their outputs, and what says that they are out of date."""

import shutil

import pytest
import yaml

from lure.pipelines import MARK, METHOD_TEMPLATE, method_pipeline, out_of_date, write_pipelines
from tests.conftest import ROOT, run_stage


@pytest.fixture
def project(tmp_path, params_dict):
    """params.yaml and the template in an empty folder, as a project's root has them."""
    (tmp_path / "pipelines").mkdir()
    shutil.copy2(ROOT / METHOD_TEMPLATE, tmp_path / METHOD_TEMPLATE)
    params_dict["methods"] = {"warm": {}, "lure_chunk": {"kind": "lure", "score_data": "chunk"}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params_dict, sort_keys=False))
    return tmp_path


def lure(root, *args):
    return run_stage("lure.cli", *args, cwd=root)


def test_the_committed_pipeline_files_are_those_of_params_yaml(monkeypatch):
    monkeypatch.chdir(ROOT)
    methods = list(yaml.safe_load((ROOT / "params.yaml").read_text())["methods"])
    assert out_of_date(methods) == []
    assert sorted(p.parent.name for p in (ROOT / "pipelines").glob("*/dvc.yaml")) == sorted(methods)


def test_a_method_file_is_the_template_with_its_name(project):
    written = lure(project, "pipelines")
    assert written.returncode == 0, written.stderr
    assert written.stdout.splitlines()[:2] == ["wrote pipelines/warm/dvc.yaml", "wrote pipelines/lure_chunk/dvc.yaml"]
    assert "git add pipelines" in written.stdout
    template = yaml.safe_load((project / METHOD_TEMPLATE).read_text())
    text = (project / method_pipeline("lure_chunk")).read_text()
    assert text.startswith(MARK)
    pipeline = yaml.safe_load(text)
    # the method's name and the project's params.yaml (two folders up) in its vars; the stages as
    # the template has them, run from the project's root
    assert pipeline["vars"] == ["../../params.yaml", {"method": "lure_chunk"}]
    assert pipeline["stages"] == template["stages"] and set(pipeline["stages"]) == {"branch", "relearn", "evaluate"}
    assert all(stage["wdir"] == "../.." for stage in pipeline["stages"].values())
    # written again: nothing to do
    again = lure(project, "pipelines")
    assert again.returncode == 0 and again.stdout.strip() == "pipelines: current for warm, lure_chunk"


def test_a_method_taken_off_loses_its_file_lock_and_outputs_but_not_a_users_own(project, params_dict):
    assert lure(project, "pipelines").returncode == 0
    for path in ("models/seed_0/lure_chunk/chunk_1.pt", "models/seed_0/warm/chunk_1.pt",
                 "metrics/relearn/seed_0/lure_chunk/chunk_2.json", "metrics/stream/seed_0/lure_chunk/chunk_2/x.tsv",
                 "metrics/evaluate/seed_0/lure_chunk.json", "metrics/evaluate/seed_0/lure_chunk-reliability.csv",
                 "metrics/evaluate/seed_0/warm.json", "pipelines/lure_chunk/dvc.lock", "pipelines/mine/dvc.yaml",
                 "models/seed_0/init.pt", "models/seed_1/chunk_1.pt"):
        (project / path).parent.mkdir(parents=True, exist_ok=True)
        (project / path).write_text("x")
    ignored = "/warm.json\n/lure_chunk.json\n/lure_chunk-reliability.csv\n"  # as DVC writes it
    (project / "metrics/evaluate/seed_0/.gitignore").write_text(ignored)
    # a copy of a generated file in a folder that no method can be named after: not a method's
    for odd in ("init.pt", "chunk_1.pt"):
        (project / "pipelines" / odd).mkdir()
        shutil.copy2(project / method_pipeline("lure_chunk"), project / "pipelines" / odd / "dvc.yaml")
    params_dict["methods"] = {"warm": {}}
    (project / "params.yaml").write_text(yaml.safe_dump(params_dict, sort_keys=False))
    stale = lure(project, "pipelines", "--check")
    assert stale.returncode == 2
    assert stale.stderr.strip() == ("error: pipelines/lure_chunk/dvc.yaml: params.yaml has no methods.lure_chunk: "
                                    "run `uv run lure pipelines`")
    removed = lure(project, "pipelines")
    assert removed.returncode == 0, removed.stderr
    assert not (project / "pipelines" / "lure_chunk").exists()
    assert not list(project.glob("models/seed_*/lure_chunk")) and not list(project.glob("metrics/**/lure_chunk*"))
    for kept in ("models/seed_0/warm/chunk_1.pt", "metrics/evaluate/seed_0/warm.json", "pipelines/mine/dvc.yaml",
                 "pipelines/warm/dvc.yaml", "models/seed_0/init.pt", "models/seed_1/chunk_1.pt",
                 "pipelines/init.pt/dvc.yaml"):
        assert (project / kept).is_file(), kept
    assert (project / "metrics/evaluate/seed_0/.gitignore").read_text() == "/warm.json\n"  # as `dvc remove` leaves it


def test_a_pipeline_file_of_the_users_own_is_not_replaced(project, monkeypatch):
    (project / method_pipeline("warm")).parent.mkdir()
    (project / method_pipeline("warm")).write_text("stages: {}\n")
    refused = lure(project, "pipelines")
    assert refused.returncode == 2
    assert refused.stderr.strip() == ("error: pipelines/warm/dvc.yaml: not written by lure pipelines, which would "
                                      "replace it: move it away")
    assert (project / method_pipeline("warm")).read_text() == "stages: {}\n"
    assert not (project / method_pipeline("lure_chunk")).exists()  # nothing written before the refusal
    monkeypatch.chdir(project)
    assert "pipelines/warm/dvc.yaml was not written by lure pipelines (move it away)" in out_of_date(["warm"])


def test_check_names_a_missing_or_edited_file(project, monkeypatch):
    missing = lure(project, "check")
    assert missing.returncode == 2
    assert "pipelines/warm/dvc.yaml is missing (methods.warm)" in missing.stderr
    assert "run `uv run lure pipelines`" in missing.stderr and "Traceback" not in missing.stderr
    monkeypatch.chdir(project)
    write_pipelines(["warm", "lure_chunk"])
    assert out_of_date(["warm", "lure_chunk"]) == []
    template = project / METHOD_TEMPLATE
    template.write_text(template.read_text().replace("python -m stages.branch", "python -m  stages.branch"))
    assert out_of_date(["warm"]) == ["pipelines/warm/dvc.yaml differs from what pipelines/method.yaml makes",
                                     "pipelines/lure_chunk/dvc.yaml: params.yaml has no methods.lure_chunk"]


def test_the_report_says_a_method_without_its_file_ran_no_stage(in_tmp):
    from lure.errors import LureError
    from lure.report import load_evaluations

    METHOD_TEMPLATE.parent.mkdir()
    shutil.copy2(ROOT / METHOD_TEMPLATE, METHOD_TEMPLATE)  # a project's root
    with pytest.raises(LureError, match=r"methods\.redo has no pipeline file \(pipelines/redo/dvc\.yaml\), so none "
                                        r"of its stages ran; run `uv run lure pipelines`"):
        load_evaluations(["redo"], [0])
    method_pipeline("redo").parent.mkdir()
    method_pipeline("redo").write_text("stages: {}\n")
    with pytest.raises(LureError, match="run the evaluate stage for redo, seed 0 first"):
        load_evaluations(["redo"], [0])
