"""params.yaml validation: every bad input is refused with the key's name."""

import pytest
import yaml

from lure.config import parse_params
from lure.errors import LureError
from lure.methods import load_methods
from lure.methods.lure import Lure
from tests.conftest import ROOT, run_stage


def test_shipped_params_are_valid(params_dict):
    p = parse_params(params_dict)
    assert p.n_chunks == 4
    assert set(p.methods) == {"warm", "scratch", "lure"}
    # The shipped LURE section is the official code's behaviour.
    assert load_methods(p)["lure"] == Lure()


def refusal(raw) -> str:
    """What `lure check` says of a params file: every section, every method's included."""
    with pytest.raises(LureError) as info:
        load_methods(parse_params(raw))
    return str(info.value)


def test_unknown_key_is_named(params_dict):
    params_dict["train"]["learning_rate"] = 0.1
    assert "train.learning_rate: unknown key" in refusal(params_dict)


def test_unknown_top_level_section_is_named(params_dict):
    params_dict["optimiser"] = {}
    assert "optimiser: unknown key" in refusal(params_dict)


def test_unknown_key_inside_a_method_is_named(params_dict):
    params_dict["methods"]["lure"]["snip_size"] = 0.2
    assert "methods.lure.snip_size: unknown key" in refusal(params_dict)


def test_ill_typed_value_is_named(params_dict):
    params_dict["train"]["epochs"] = "ten"
    message = refusal(params_dict)
    assert "train.epochs:" in message and "'ten'" in message


@pytest.mark.parametrize("fraction", [-0.1, 1.5])
def test_fraction_outside_unit_interval(params_dict, fraction):
    params_dict["methods"]["lure"]["fraction"] = fraction
    message = refusal(params_dict)
    assert "methods.lure.fraction:" in message and str(fraction) in message


def test_chunk_count_below_two(params_dict):
    params_dict["chunks"] = []
    assert "chunks: at least 2 chunks are needed" in refusal(params_dict)


def test_chunks_must_follow_each_other(params_dict):
    params_dict["chunks"][1]["prev"] = 1
    assert "chunks.1: prev must be k - 1 = 2" in refusal(params_dict)
    params_dict["chunks"] = [{"k": 2, "prev": 1}, {"k": 4, "prev": 3}]
    assert "chunks must be k = [2, 3]" in refusal(params_dict)


def test_unknown_method_kind(params_dict):
    params_dict["methods"]["fancy"] = {}
    assert "methods.fancy" in refusal(params_dict)


def test_method_variant_takes_its_kind(params_dict):
    params_dict["methods"]["lure_chunk"] = {"kind": "lure", "score_data": "chunk"}
    method = load_methods(parse_params(params_dict))["lure_chunk"]
    assert isinstance(method, Lure) and method.kind == "lure" and method.score_data == "chunk"


def test_bad_value_in_a_variant_names_the_variant(params_dict):
    params_dict["methods"]["lure_big"] = {"kind": "lure", "fraction": 2}
    assert "methods.lure_big.fraction:" in refusal(params_dict)


def test_imagefolder_needs_its_keys(params_dict):
    params_dict["data"] = {"source": "imagefolder", "chunk_size": 10}
    assert "data.path: required key is missing" in refusal(params_dict)


def test_stage_refuses_bad_params_without_traceback(tmp_path, params_dict):
    params_dict["data"]["val_fraction"] = 1.5
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params_dict))
    result = run_stage("stages.prepare", cwd=tmp_path)
    assert result.returncode == 2
    assert "data.val_fraction: Input should be less than 1 (got 1.5)" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()


def test_a_bad_method_setting_is_refused_by_lure_check_and_by_the_methods_stages(tmp_path, params_dict):
    params_dict["methods"]["lure"]["fraction"] = 1.5
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params_dict))
    for command in [("lure.cli", "check"), ("stages.relearn", "lure", "2", "--seed", "0")]:
        result = run_stage(*command, cwd=tmp_path)
        assert result.returncode == 2, command
        assert "methods.lure.fraction: Input should be less than or equal to 1 (got 1.5)" in result.stderr
        assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == [tmp_path / "params.yaml"]


def test_stage_refuses_missing_dataset_path(tmp_path, params_dict):
    params_dict["data"] = {"source": "imagefolder", "path": str(tmp_path / "nowhere"), "chunk_size": 10}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params_dict))
    result = run_stage("stages.prepare", cwd=tmp_path)
    assert result.returncode == 2
    assert f"data.path: {tmp_path / 'nowhere'} is not a directory" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()


def test_missing_params_file(tmp_path):
    result = run_stage("stages.prepare", cwd=tmp_path)
    assert result.returncode == 2
    assert "params.yaml: no such params file" in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_yaml_is_reported(tmp_path):
    (tmp_path / "params.yaml").write_text("seed: [1,\n")
    result = run_stage("stages.prepare", cwd=tmp_path)
    assert result.returncode == 2
    assert "params.yaml is not valid YAML" in result.stderr


@pytest.mark.parametrize("preset", sorted(p.name for p in (ROOT / "presets").glob("*.yaml")))
def test_presets_are_valid(preset):
    load_methods(parse_params(yaml.safe_load((ROOT / "presets" / preset).read_text()), preset))


def test_paper_preset_is_the_papers_recipe():
    p = parse_params(yaml.safe_load((ROOT / "presets" / "cifar10-paper.yaml").read_text()))
    assert (p.data.source, p.data.chunk_size, p.data.val_fraction, p.n_chunks) == ("cifar10", 6250, 0.1, 8)
    assert p.model.arch == "resnet18"
    t = p.train
    assert (t.epochs, t.batch_size, t.lr, t.momentum, t.weight_decay) == (50, 64, 0.1, 0.9, 1e-4)
    assert (t.lr_milestones, t.lr_gamma, t.augment, t.select) == ([20, 40], 0.1, "crop_flip", "best_val")
    assert p.replay.mode == "full" and load_methods(p)["lure"] == Lure(fraction=0.2)


def tracked_params() -> set[str]:
    """Every params key that the stages of dvc.yaml and of each method's pipeline file (its
    template) track (DVC refuses to run if one is missing)."""
    stages = [*yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].values(),
              *yaml.safe_load((ROOT / "pipelines" / "method.yaml").read_text())["stages"].values()]
    keys = set()
    for stage in stages:
        body = stage.get("do", stage)
        keys |= {k.split(".${")[0] for k in body.get("params", [])}
    return keys


@pytest.mark.parametrize("preset", sorted(p.name for p in (ROOT / "presets").glob("*.yaml")) + ["../params.yaml"])
def test_params_files_hold_every_tracked_section(preset):
    raw = yaml.safe_load((ROOT / "presets" / preset).read_text())
    for key in tracked_params():
        node = raw
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"{preset} lacks {key}, which a stage tracks"
            node = node[part]


@pytest.mark.parametrize("seeds, expected", [
    ([0, 1, 0, 2, 2], "seeds: run seeds must be distinct; listed more than once: [0, 2]"),
    ([], "seeds: list at least one run seed"),
    ([0, -1], "seeds.1: Input should be greater than or equal to 0"),
    (3, "seeds: Input should be a valid list"),
])
def test_bad_run_seeds_are_named(params_dict, seeds, expected):
    params_dict["seeds"] = seeds
    assert expected in refusal(params_dict)


def test_run_seeds_default_to_one_and_keep_their_order(params_dict):
    assert parse_params(params_dict).seeds == [0]
    del params_dict["seeds"]
    assert parse_params(params_dict).seeds == [0]
    params_dict["seeds"] = [2, 0, 1]
    assert parse_params(params_dict).seeds == [2, 0, 1]


# --- every setting described once, in the code ------------------------------------------------


def documented_keys() -> set[str]:
    from lure.cli import setting_groups

    return {key for _, _, rows in setting_groups() for key, *_ in rows}


def keys_of(raw: dict, prefix: str = "") -> set[str]:
    """Every key a params file sets, as `lure params` names them (methods.<name>.x, chunks[].k)."""
    keys = set()
    for name, value in raw.items():
        key = f"{prefix}{name}"
        if prefix == "methods.":
            key = "methods.<name>"
            keys |= keys_of(value or {}, f"{key}.") - {f"{key}.kind"}
            continue
        keys.add(key)
        if isinstance(value, dict):
            keys |= keys_of(value, f"{key}.")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            keys |= keys_of(value[0], f"{key}[].")
    return keys


@pytest.mark.parametrize("preset", sorted(p.name for p in (ROOT / "presets").glob("*.yaml")) + ["../params.yaml"])
def test_every_key_of_the_shipped_params_files_is_described(preset):
    raw = yaml.safe_load((ROOT / "presets" / preset).read_text())
    assert keys_of(raw) - documented_keys() == set()


def test_every_setting_has_a_description_and_the_docs_are_current():
    from lure.cli import setting_groups, settings_reference

    undescribed = [key for _, _, rows in setting_groups() for key, _, _, text in rows if not text.strip()]
    assert undescribed == []
    assert {"methods.<name>.fraction", "methods.<name>.tau", "methods.<name>.mitigate.warmup", "data.path",
            "robustness.test_images", "chunks[].prev"} <= documented_keys()
    assert (ROOT / "docs" / "params.md").read_text() == settings_reference(markdown=True), \
        "docs/params.md is stale: uv run lure params --markdown > docs/params.md"


def test_lure_params_prints_the_descriptions(tmp_path):
    result = run_stage("lure.cli", "params", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "  train.epochs: int (>= 1) = 30\n      epochs per chunk" in result.stdout
    assert "methods.<name> (kind: shrink_perturb)" in result.stdout
    assert "  methods.<name>.shrink: float (>= 0.0, <= 1.0) = 0.3\n      share of every weight kept" in result.stdout
