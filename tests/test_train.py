"""The training loop on real digits: it learns and it is deterministic (its optimisers and schedule:
tests/test_optim.py)."""

import torch

from lure.config import TrainSettings
from lure.models import accuracy, set_input_stats, small_cnn
from lure.train import fit
from tests.conftest import digits_images


def train_once(seed=0, epochs=4, state=None, **overrides):
    torch.manual_seed(seed)
    train, val = digits_images(0, 400), digits_images(400, 500)
    model = small_cnn(1, 10, width=8)
    set_input_stats(model, train.x)
    params = TrainSettings(**{"epochs": epochs, "batch_size": 32, "lr": 0.05, "lr_milestones": [3], **overrides})
    result = fit(model, train, val, params, torch.Generator().manual_seed(seed), state)
    return model, result, val


def test_fit_learns_real_digits_well_above_chance():
    model, result, val = train_once()
    assert result.val_acc > 0.8  # chance is 0.1
    assert result.updates == 4 * 13 and result.images == 4 * 400


def test_fit_keeps_the_best_validation_checkpoint():
    # A high learning rate without decay makes validation accuracy go up and down.
    model, result, val = train_once(epochs=8, lr=0.5, lr_milestones=[])
    history = result.val_history
    assert len(history) == 8 and max(history) > history[-1]  # the last epoch is not the best here
    assert result.best_epoch == history.index(max(history)) + 1
    assert accuracy(model, val) == max(history)  # the model holds the best epoch's weights
    last_model, last, _ = train_once(epochs=8, lr=0.5, lr_milestones=[], select="last")
    assert last.best_epoch == 8 and last.val_history == []
    assert accuracy(last_model, val) == history[-1]  # same run, kept at its last epoch


def test_fit_is_deterministic_for_a_seed():
    a, ra, _ = train_once(seed=3)
    b, rb, _ = train_once(seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert ra.val_acc == rb.val_acc and ra.train_acc == rb.train_acc
    assert all(torch.equal(ra.state["momentum"][k], rb.state["momentum"][k]) for k in ra.state["momentum"])


def test_carried_momentum_changes_the_first_updates():
    _, first, _ = train_once(seed=0, epochs=1)
    a, _, _ = train_once(seed=1, epochs=1)
    b, _, _ = train_once(seed=1, epochs=1, state=first.state)
    assert not all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


class EpochRecorder:
    """A hook keeping each epoch's statistics."""

    def __init__(self):
        self.epochs = []

    def __getattr__(self, name):  # the Hook methods it does not need do nothing
        return lambda *args: None

    def after_epoch(self, trainer, epoch, stats):
        self.epochs.append(stats)


def test_stop_at_train_acc_ends_the_chunk_at_the_first_epoch_that_reaches_it():
    torch.manual_seed(0)
    train, val = digits_images(0, 400), digits_images(400, 500)
    runs = {}
    for stop in (None, 0.95):
        torch.manual_seed(0)
        model = small_cnn(1, 10, width=8)
        set_input_stats(model, train.x)
        recorder = EpochRecorder()
        params = TrainSettings(epochs=30, batch_size=32, lr=0.05, lr_milestones=[], select="last",
                               stop_at_train_acc=stop)
        runs[stop] = fit(model, train, val, params, torch.Generator().manual_seed(0), hooks=[recorder]), recorder
    (full, full_epochs), (stopped, stopped_epochs) = runs[None], runs[0.95]
    accs = [e.train_acc for e in full_epochs.epochs]
    first = next(i for i, a in enumerate(accs) if a >= 0.95) + 1  # the same run until then
    assert 1 < first < 30 and stopped.epochs_run == first == len(stopped_epochs.epochs) == stopped.best_epoch
    assert [e.train_acc for e in stopped_epochs.epochs] == accs[:first]
    assert stopped.updates == first * 13 and stopped.metrics()["epochs_run"] == first
    assert stopped.metrics()["epoch_train_acc"] == accs[first - 1] >= 0.95 > accs[first - 2]
    assert full.epochs_run is None and "epochs_run" not in full.metrics() and len(accs) == 30
    assert "epoch_train_acc" not in full.metrics()


def test_an_epochs_speed_is_its_images_over_its_wall_time():
    import time

    from lure.train import Trainer

    images = digits_images(0, 320)
    trainer = Trainer(small_cnn(1, 10, width=4), TrainSettings(batch_size=32), torch.device("cpu"), epoch_updates=10)
    start = time.perf_counter()
    stats = trainer.epoch(images, torch.Generator().manual_seed(0))
    wall = time.perf_counter() - start
    # the epoch's own clock runs inside the wall clock, over almost all of it
    assert stats.images / wall <= stats.images_per_s <= 1.5 * stats.images / wall
