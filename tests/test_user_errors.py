"""What a new user trips over, each as it was met: a diverging run, corrupt files, settings that
`lure check` called valid but that fail at run time, and the wording of messages."""

import json
import shutil

import pytest
import torch
import yaml

from lure.errors import LureError
from lure.io import write_json
from tests.conftest import ROOT, run_stage

TINY = {
    "data": {"source": "digits", "chunk_size": 120},
    "chunks": [{"k": 2, "prev": 1}],
    "model": {"width": 4},
    "train": {"device": "cpu", "epochs": 2, "batch_size": 16, "lr_milestones": [2]},
    "methods": {"warm": {}, "lure": {}},
    "stability": {"every": 5, "samples": 10},
    "robustness": {"corruptions": "none"},
}


def write_params(folder, **changes) -> None:
    params = yaml.safe_load(yaml.safe_dump(TINY))
    for key, value in changes.items():
        section, _, name = key.partition(".")
        if name:
            params[section][name] = value
        else:
            params[section] = value
    (folder / "params.yaml").write_text(yaml.safe_dump(params))


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    """A tiny run prepared and learned (chunk 1), to start later stages from."""
    root = tmp_path_factory.mktemp("learned")
    write_params(root)
    for stage in [("stages.prepare",), ("stages.learn", "--seed", "0"), ("stages.branch", "lure", "--seed", "0")]:
        result = run_stage(*stage, cwd=root)
        assert result.returncode == 0, result.stderr
    return root


def copy_of(learned, tmp_path):
    for name in ("data", "models", "metrics"):
        shutil.copytree(learned / name, tmp_path / name)
    shutil.copy(learned / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


def assert_refused(result, *phrases: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) <= 3, result.stderr  # a message, not a dump
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr


# --- 1. a diverging run stops, naming where, and leaves nothing behind --------------------------


def test_a_diverging_first_chunk_stops_the_learn_stage(tmp_path):
    write_params(tmp_path, **{"train.lr": 1e6})
    assert run_stage("stages.prepare", cwd=tmp_path).returncode == 0
    result = run_stage("stages.learn", "--seed", "0", cwd=tmp_path)
    assert_refused(result, "seed 0, chunk 1", "not finite", "update", "train.lr")
    assert not (tmp_path / "models").exists() and not (tmp_path / "metrics").exists()


def test_a_diverging_relearn_stage_names_the_method_seed_chunk_and_update(learned, tmp_path):
    root = copy_of(learned, tmp_path)
    write_params(root, **{"train.lr": 1e6})
    before = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    result = run_stage("stages.relearn", "lure", "2", "--seed", "0", cwd=root)
    assert_refused(result, "methods.lure, seed 0, chunk 2", "not finite", "update")
    assert sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file()) == before  # nothing written


def test_metrics_files_are_strict_json(tmp_path):
    write_json(tmp_path / "m.json", {"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": -float("inf")}})
    text = (tmp_path / "m.json").read_text()

    def refuse(token):
        raise ValueError(token)

    assert json.loads(text, parse_constant=refuse) == {"a": None, "b": [1.0, None], "c": {"d": None}}


# --- 3. a corrupt file is named, with what to do -------------------------------------------------


def test_a_corrupt_checkpoint_is_named_with_what_to_do(learned, tmp_path):
    root = copy_of(learned, tmp_path)
    checkpoint = root / "models" / "seed_0" / "lure" / "chunk_1.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    result = run_stage("stages.relearn", "lure", "2", "--seed", "0", cwd=root)
    assert_refused(result, str(checkpoint.relative_to(root)), "dvc")


@pytest.mark.parametrize("name", ["chunk_1.npz", "meta.json", "seen_2.json"])
def test_a_corrupt_prepared_file_is_named(learned, tmp_path, name):
    root = copy_of(learned, tmp_path)
    (root / "data" / "prepared" / name).write_bytes(b"\x00not what it was")
    result = run_stage("stages.relearn", "lure", "2", "--seed", "0", cwd=root)
    assert_refused(result, f"data/prepared/{name}")


def test_corrupt_training_metrics_are_named(learned, tmp_path):
    from lure.evaluate import training_metrics

    root = copy_of(learned, tmp_path)
    (root / "metrics" / "learn" / "seed_0.json").write_text("{not json")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        with pytest.raises(LureError, match=r"metrics/learn/seed_0.json cannot be read"):
            training_metrics("lure", 0, n_chunks=1)


def test_reading_a_checkpoint_that_is_not_one(tmp_path):
    from lure.checkpoints import load_checkpoint

    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(LureError, match="other.pt"):
        load_checkpoint(tmp_path / "other.pt")


# --- 6. lure check checks what it can without training --------------------------------------------


@pytest.mark.parametrize("read", [True, False], ids=["with --data", "without"])
def test_check_refuses_chunks_the_data_cannot_hold(tmp_path, read):
    write_params(tmp_path, chunks=[{"k": k, "prev": k - 1} for k in range(2, 5)], **{"data.chunk_size": 2000})
    result = run_stage("lure.cli", "check", *(["--data"] if read else []), cwd=tmp_path)
    assert_refused(result, "data.chunk_size: 4 chunks of 2000 images need 8000", "1437")


@pytest.mark.parametrize("data, phrases", [
    ({"chunk_size": 20000}, ("data.chunk_size: 4 chunks of 20000 images need 80000", "50000")),
    ({"chunk_size": 30, "shots_per_class": 10}, ("4 chunks of 30 images need 120", "has 100")),
    ({"chunk_size": [40, 30, 20]}, ("data.chunk_size: lists 3 sizes, but chunk 4 is listed",)),
    ({"chunk_size": [40, 30], "split": "class_incremental"},
     ("data.split: a list of chunk sizes (data.chunk_size) needs split: iid",)),
    ({"chunk_size": 100, "split": "class_incremental", "classes_per_chunk": 3}, ("data.classes_per_chunk", "has 10")),
])
def test_check_knows_the_size_of_torchvisions_sources_without_their_files(tmp_path, data, phrases):
    """CIFAR-10 is not there (prepare would download it): its size is known all the same."""
    source = {"source": "cifar10", "root": str(tmp_path / "absent"), "download": True, **data}
    write_params(tmp_path, chunks=[{"k": k, "prev": k - 1} for k in range(2, 5)], data=source)
    assert_refused(run_stage("lure.cli", "check", cwd=tmp_path), *phrases)
    write_params(tmp_path, data={**source, "chunk_size": 5, "classes_per_chunk": 2})
    fits = run_stage("lure.cli", "check", cwd=tmp_path)
    assert fits.returncode == 0 and "they fit in its" in fits.stdout, fits.stderr


def test_branch_refuses_a_corrupt_chunk_1_model_and_writes_nothing(learned, tmp_path):
    root = copy_of(learned, tmp_path)
    first = root / "models" / "seed_0" / "chunk_1.pt"
    first.write_bytes(first.read_bytes()[:1000])
    (root / "models" / "seed_0" / "lure" / "chunk_1.pt").unlink()
    assert_refused(run_stage("stages.branch", "lure", "--seed", "0", cwd=root), "models/seed_0/chunk_1.pt",
                   "cannot be read")
    assert not (root / "models" / "seed_0" / "lure" / "chunk_1.pt").exists()


def test_prepare_names_the_chunk_count_it_was_asked_for(tmp_path):
    write_params(tmp_path, chunks=[{"k": k, "prev": k - 1} for k in range(2, 5)], **{"data.chunk_size": 2000})
    assert_refused(run_stage("stages.prepare", cwd=tmp_path), "4 chunks of 2000 images need 8000")


def test_check_refuses_a_missing_data_folder_and_a_missing_gpu(tmp_path):
    write_params(tmp_path, data={"source": "imagefolder", "path": str(tmp_path / "nowhere"), "chunk_size": 10})
    assert_refused(run_stage("lure.cli", "check", cwd=tmp_path), "data.path", "nowhere")
    if not torch.cuda.is_available():
        write_params(tmp_path, **{"train.device": "cuda"})
        assert_refused(run_stage("lure.cli", "check", cwd=tmp_path), "train.device: cuda")


def test_compiling_on_the_cpu_needs_the_fast_kernels(tmp_path):
    write_params(tmp_path, **{"train": {**TINY["train"], "compile": True, "cpu_kernels": "portable"}})
    assert_refused(run_stage("lure.cli", "check", cwd=tmp_path), "train.compile", "train.cpu_kernels: fast")


def test_check_says_which_checks_need_the_data(tmp_path):
    """The size of an image folder is known only by reading it."""
    for part in ("train", "test"):
        (tmp_path / "photos" / part / "cat").mkdir(parents=True)
    write_params(tmp_path, data={"source": "imagefolder", "path": str(tmp_path / "photos"), "chunk_size": 10})
    result = run_stage("lure.cli", "check", cwd=tmp_path)
    assert result.returncode == 0 and "whether they fit needs the data: uv run lure check --data" in result.stdout


# --- 8. wording ------------------------------------------------------------------------------------


def test_an_unknown_method_kind_is_named_as_the_user_wrote_it(tmp_path):
    write_params(tmp_path, methods={"foo": {}})
    result = run_stage("lure.cli", "check", cwd=tmp_path)
    assert_refused(result, "methods.foo: no method kind 'foo'")
    assert "Input tag" not in result.stderr


def test_an_empty_params_file(tmp_path):
    (tmp_path / "params.yaml").write_text("# nothing yet\n")
    result = run_stage("lure.cli", "check", cwd=tmp_path)
    assert_refused(result, "params.yaml is empty")
    assert "NoneType" not in result.stderr


def test_a_key_of_another_source_says_whose_it_is(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["source"] = "cifar10"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = run_stage("lure.cli", "check", cwd=tmp_path)
    assert_refused(result, "data.test_fraction: a key of the digits source only, not of cifar10")


def test_help_shows_no_type_for_flags(tmp_path):
    result = run_stage("stages.relearn", "--help", cwd=tmp_path)
    assert result.returncode == 0 and "--help" in result.stdout and "<bool>" not in result.stdout


def test_no_corruptions_says_so(learned, tmp_path):
    root = copy_of(learned, tmp_path)
    write_params(root)
    result = run_stage("stages.corrupt", cwd=root)
    assert result.returncode == 0, result.stderr
    assert "no corruptions" in result.stdout and "0 corruptions" not in result.stdout


# --- 4. progress: per epoch, as the ecosystem shows it -------------------------------------------


def fit_with_progress(terminal: bool, capsys, tmp_path):
    from lure.config import TrainSettings
    from lure.models import small_cnn
    from lure.progress import Log, Progress
    from lure.train import fit
    from tests.conftest import digits_images

    torch.manual_seed(0)
    with Log(tmp_path / "log") as log:
        fit(small_cnn(1, 10, width=4), digits_images(0, 64), digits_images(64, 96),
            TrainSettings(epochs=3, batch_size=16, lr_milestones=[]), torch.Generator().manual_seed(0),
            hooks=[Progress("lure seed 0 chunk 2", log, terminal=terminal)])
        log.close({"train_s": 1.0})
    return capsys.readouterr()


def test_plain_progress_lines_when_the_output_is_not_a_terminal(capsys, tmp_path, monkeypatch):
    import lure.ticker

    monkeypatch.setattr(lure.ticker, "EVERY_S", 0.0)  # a line every epoch, as a long stage gets
    out = fit_with_progress(False, capsys, tmp_path).out.splitlines()
    assert [line.split(",")[0] for line in out] == [f"  lure seed 0 chunk 2: epoch {e}/3" for e in (1, 2)]
    assert all(" loss " in line and " train " in line and " val " in line and " img/s " in line
               and line.endswith(" s left") for line in out)
    # the curves are logged as they go: three epochs, at the updates so far (4 a chunk of 64 in 16s)
    for name in ("loss", "train_acc", "val_acc"):
        rows = (tmp_path / "log" / "plots" / "metrics" / f"{name}.tsv").read_text().splitlines()
        assert rows[0] == f"step\t{name}" and [int(r.split("\t")[0]) for r in rows[1:]] == [4, 8, 12]
    assert json.loads((tmp_path / "log" / "timing.json").read_text()) == {"train_s": 1.0}


def test_a_short_stage_prints_no_progress_lines_and_a_terminal_gets_a_bar(capsys, tmp_path):
    assert fit_with_progress(False, capsys, tmp_path).out == ""  # shorter than a line's interval
    bar = fit_with_progress(True, capsys, tmp_path / "tty").err
    assert "lure seed 0 chunk 2" in bar and "3/3" in bar and "epoch" in bar


# --- 5. timings are kept apart, so that the same results look the same -----------------------------


class Poison:
    """A hook that makes a weight NaN after the update `at` (1-based)."""

    def __init__(self, at: int):
        self.at = at

    def before_fit(self, trainer):
        pass

    def before_step(self, trainer):
        pass

    def after_step(self, trainer):
        if trainer.updates == self.at:
            with torch.no_grad():
                next(trainer.model.parameters())[0].fill_(float("nan"))

    def after_epoch(self, trainer, epoch, stats):
        pass

    def after_fit(self, trainer):
        pass


@pytest.mark.parametrize("at, message", [(5, "the loss is not finite at update 6 (epoch 2 of 3)"),
                                         (8, "the weights are not finite by update 8 (epoch 2 of 3)")])
def test_the_loop_names_the_update_where_the_run_diverged(at, message):
    from lure.config import TrainSettings
    from lure.models import small_cnn
    from lure.train import NotFinite, fit
    from tests.conftest import digits_images

    torch.manual_seed(0)
    with pytest.raises(NotFinite, match=message.replace("(", r"\(").replace(")", r"\)")):
        # 4 updates an epoch (64 images in 16s): update 5 is the first of epoch 2, update 8 its last
        fit(small_cnn(1, 10, width=4), digits_images(0, 64), digits_images(64, 96),
            TrainSettings(epochs=3, batch_size=16, lr_milestones=[]), torch.Generator().manual_seed(0),
            hooks=[Poison(at)])


def test_a_failed_log_removes_itself_and_the_folders_it_made_only(tmp_path):
    from lure.progress import Log

    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "kept.json").write_text("{}")
    with pytest.raises(RuntimeError):
        with Log(tmp_path / "metrics" / "stream" / "seed_0" / "lure" / "chunk_2") as log:
            log.log(0, old_acc=0.5)
            raise RuntimeError("the stage failed")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["kept.json", "metrics"]


def test_chunks_beyond_the_last_are_the_removed_chunks_outputs_only(in_tmp):
    from lure import paths

    for method in ("lure", "lure_sgm"):
        for k in (1, 2, 3, 10):
            for path in (paths.model(method, 0, k), paths.relearn_metrics(method, 0, k)):
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("")
            paths.curves_log(method, 0, k).mkdir(parents=True, exist_ok=True)
    (paths.method_models("lure", 0) / "chunk_3.pt.bak").write_text("")  # not the pipeline's: left alone
    stale = paths.chunks_beyond("lure", 0, 2)
    assert sorted(str(p) for p in stale) == sorted(
        str(p) for k in (3, 10) for p in (paths.model("lure", 0, k), paths.relearn_metrics("lure", 0, k),
                                          paths.curves_log("lure", 0, k)))


def test_results_kept_and_printed_from_their_folder(learned, tmp_path, monkeypatch):
    from stages import corrupt, evaluate, relearn

    root = copy_of(learned, tmp_path)
    monkeypatch.chdir(root)
    relearn.main("lure", 2, seed=0)
    corrupt.main()
    evaluate.main("lure", seed=0)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["methods"] = {"lure": {}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    kept = run_stage("lure.cli", "results", "--keep", "results/tiny", cwd=root)
    assert kept.returncode == 0, kept.stderr
    (root / "metrics").rename(root / "gone")  # the kept folder stands on its own
    again = run_stage("lure.cli", "results", "--from", "results/tiny", cwd=root)
    assert again.returncode == 0 and again.stdout == kept.stdout
    assert "| lure |" in again.stdout
    assert_refused(run_stage("lure.cli", "results", "--from", "results/tiny", "--columns", "final_acc,speed",
                             cwd=root), "--columns: no column speed")


def test_evaluate_removes_the_outputs_of_chunks_taken_off_params_yaml_last(learned, tmp_path, monkeypatch):
    """DVC leaves a removed stage's outputs in place, inside evaluate's folder deps: evaluate takes
    them away once its own outputs are written, and leaves them where it fails before that."""
    from lure import paths
    from stages import corrupt, evaluate, relearn

    root = copy_of(learned, tmp_path)
    monkeypatch.chdir(root)
    relearn.main("lure", 2, seed=0)
    corrupt.main()
    stale = [paths.model("lure", 0, 3), paths.relearn_metrics("lure", 0, 3)]  # a chunk 3 that params no longer lists
    for path, source in zip(stale, (paths.model("lure", 0, 2), paths.relearn_metrics("lure", 0, 2))):
        shutil.copy(source, path)
    paths.model("lure", 0, 1).rename(root / "chunk_1.pt")  # the evaluation fails: nothing is removed
    with pytest.raises(LureError):
        evaluate.main("lure", seed=0)
    assert all(path.exists() for path in stale) and not paths.evaluation("lure", 0).exists()
    (root / "chunk_1.pt").rename(paths.model("lure", 0, 1))
    evaluate.main("lure", seed=0)
    assert not any(path.exists() for path in stale)
    result = json.loads(paths.evaluation("lure", 0).read_text())
    assert "chunk_2" in json.dumps(result) and "chunk_3" not in json.dumps(result)
