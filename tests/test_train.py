"""depth_estimation.distill: MiDaS losses, the augmented dataset, overfitting, checkpoints and resume.
The label cache is faked (``label_cache.iter_cache`` and ``.load_item`` patched) with synthetic
scenes."""
import argparse
import glob
import json
import os
import sys

import numpy as np
import pytest
import torch

from depth_estimation.distill import data, label_cache, losses, train
from depth_estimation.models import fastdepth
from depth_estimation.models.specs import parse_spec

SIZE = (64, 96)


def _scene(key: str, hw=(96, 144), label_hw=(64, 96)):
    """A textured ground plane (disparity growing downwards) with boxes nearer than the ground."""
    rng = np.random.default_rng(int(key.split("-")[1]))
    h, w = label_hw
    disp = np.tile(np.linspace(0.05, 1.0, h, dtype=np.float32)[:, None], (1, w))
    rgb = np.empty((h, w, 3), np.float32)
    rgb[:] = rng.uniform(0.2, 0.8, 3) * (0.6 + 0.4 * disp[..., None])
    for _ in range(3):
        y, x = rng.integers(0, h - 16), rng.integers(0, w - 16)
        bh, bw = rng.integers(8, 24), rng.integers(8, 32)
        disp[y:y + bh, x:x + bw] = rng.uniform(1.2, 2.5)
        rgb[y:y + bh, x:x + bw] = rng.uniform(0, 1, 3)
    rgb = np.clip(rgb + rng.normal(0, 0.03, rgb.shape), 0, 1)
    import cv2

    return (cv2.resize((rgb * 255).astype(np.uint8), (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR),
            disp * 3.0)


@pytest.fixture
def cache(monkeypatch, tmp_path):
    path = str(tmp_path / "cache")
    entries = [{"key": "img-%d" % i, "source": "img-%d.png" % i, "width": 144, "height": 96,
                "label_hw": [64, 96], "teacher": "fake"} for i in range(6)]

    def iter_cache(c):
        assert c == path
        return iter([dict(e) for e in entries])

    def load_item(c, entry):
        return _scene(entry["key"])

    monkeypatch.setattr(label_cache, "iter_cache", iter_cache)
    monkeypatch.setattr(label_cache, "load_item", load_item)
    return path


def ssi(pred, target, mask):
    """The scale-and-shift-invariant part of the distillation loss alone."""
    return losses.distill_loss(pred, target, mask, alpha=0.0)[0]


def test_ssi_loss_is_zero_for_affine_predictions_and_invariant():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(3, 16, 24, generator=g) * 5 + 0.1
    mask = torch.rand(3, 16, 24, generator=g) > 0.2
    other = torch.rand(3, 16, 24, generator=g)
    garbage = torch.where(mask, 3.0 * target + 2.0, torch.full_like(target, 1e3))  # masked-out pixels ignored
    assert ssi(garbage, target, mask) < 1e-8
    assert ssi(0.5 * target + 7, target, mask) < 1e-8
    assert ssi(-0.5 * target + 7, target, mask) > 1  # an inverted prediction is wrong
    loss = ssi(other, target, mask)
    assert loss > 0.1
    assert torch.allclose(ssi(4.0 * other - 3.0, target, mask), loss, rtol=1e-4)
    # the target's units do not matter either
    assert torch.allclose(ssi(other, 10 * target + 1, mask), loss, rtol=1e-4)
    # an image without valid pixels does not count
    empty = mask.clone()
    empty[0] = False
    assert torch.isfinite(ssi(other, target, empty))


def test_gradient_loss_is_zero_for_affine_predictions():
    g = torch.Generator().manual_seed(1)
    target = torch.rand(2, 32, 48, generator=g) + 0.5
    mask = torch.ones_like(target, dtype=torch.bool)
    assert losses.distill_loss(2.0 * target - 1.0, target, mask, alpha=0.5)[1]["grad"] < 1e-6
    other = torch.rand(2, 32, 48, generator=g)
    total, parts = losses.distill_loss(other, target, mask, alpha=0.5)
    assert parts["grad"] > 0.1
    assert torch.allclose(parts["ssi"], ssi(other, target, mask))
    assert torch.allclose(total, parts["ssi"] + 0.5 * parts["grad"])
    total2, parts2 = losses.distill_loss(other, target, mask, alpha=2.0)  # alpha weighs the same gradient term
    assert torch.allclose(parts2["grad"], parts["grad"])
    assert torch.allclose(total2, parts["ssi"] + 2 * parts["grad"])


def _fit_unresolved_edge(ssi_loss: str) -> float:
    """An 'edge' the student cannot resolve: one free value predicts 30 pixels whose targets are 3.0
    (21 of them: the obstacle) and 1.0 (9: the road behind it), next to 30 pixels predicted exactly.
    Returns the value the loss drives it to."""
    target = torch.cat([torch.linspace(0.5, 3.5, 30), torch.full((21,), 3.0), torch.full((9,), 1.0)])
    target = target.reshape(1, 6, 10)
    mask = torch.ones_like(target, dtype=torch.bool)
    v = torch.tensor(2.0, requires_grad=True)
    opt = torch.optim.Adam([v], lr=0.02)
    for _ in range(400):
        pred = torch.cat([target.flatten()[:30], v.expand(30)]).reshape(1, 6, 10)
        loss = losses.distill_loss(pred, target, mask, alpha=0.0, ssi=ssi_loss)[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(v.detach())


def test_mae_keeps_an_unresolved_edge_at_the_likelier_depth_mse_pulls_it_half_way():
    """``depth-distill train --ssi mae``: where the student cannot tell the obstacle from the road
    behind it, the absolute residual settles on the majority (the obstacle, 3.0: the median), the
    squared one on the mean (2.4: an obstacle read too far)."""
    assert _fit_unresolved_edge("mae") == pytest.approx(3.0, abs=0.1)
    assert _fit_unresolved_edge("mse") == pytest.approx(2.4, abs=0.05)
    with pytest.raises(ValueError, match="ssi"):
        losses.distill_loss(torch.zeros(1, 2, 2), torch.ones(1, 2, 2), torch.ones(1, 2, 2, dtype=torch.bool),
                            ssi="huber")


def test_split_and_dataset(cache):
    keys = ["img-%d" % i for i in range(6)]
    tr, val = data.split_keys(keys, 0.05)
    assert (tr, val) == data.split_keys(list(reversed(keys)), 0.05)
    assert len(val) == 1 and sorted(tr + val) == keys
    assert len(data.split_keys(keys[:2], 0.05)[1]) == 1 and data.split_keys(keys[:1], 0.05) == (keys[:1], [])
    assert data.split_keys(keys, 0.0)[1] == []
    ds = data.DistillDataset(cache, keys, train=True, size=SIZE)
    x, y, m = ds[(2, 123)]
    assert x.shape == (3,) + SIZE and y.shape == SIZE and m.shape == SIZE
    assert m.dtype == torch.bool and m.all()
    assert x.dtype == torch.float32 and abs(float(x.mean())) < 2.5 and float(y.min()) >= 0
    assert torch.equal(ds[(2, 123)][0], x) and not torch.equal(ds[(2, 124)][0], x)  # seeded augmentation
    xv, yv, _ = data.DistillDataset(cache, keys, train=False, size=SIZE)[2]
    assert torch.equal(xv, data.DistillDataset(cache, keys, train=False, size=SIZE)[2][0])
    assert yv.shape == SIZE and float(yv.max()) > 3  # the near boxes


def test_obstacle_weight_counts_errors_on_obstacle_pixels_more():
    """Float weights: 1 everywhere is the bool mask; an error on the weighted pixels costs more, one
    elsewhere less, and the alignment (fit on every valid pixel alike) does not move."""
    g = torch.Generator().manual_seed(2)
    target = torch.rand(2, 24, 32, generator=g) + 0.5
    mask = torch.rand(2, 24, 32, generator=g) > 0.1
    other = torch.rand(2, 24, 32, generator=g)
    ones = losses.distill_loss(other, target, mask.float())[0]
    assert torch.allclose(ones, losses.distill_loss(other, target, mask)[0])
    obstacle = torch.zeros_like(target, dtype=torch.bool)
    obstacle[:, 8:16, 10:20] = True
    weight = mask.float() * torch.where(obstacle, 4.0, 1.0)
    wrong_on_obstacle = torch.where(obstacle, target + 0.8, target)
    wrong_elsewhere = torch.where(obstacle, target, target + 0.8 * (torch.rand(2, 24, 32, generator=g) > 0.9))
    for pred, more in ((wrong_on_obstacle, True), (wrong_elsewhere, False)):
        for alpha in (0.0, 0.5):
            plain = losses.distill_loss(pred, target, mask, alpha=alpha)[0]
            weighted = losses.distill_loss(pred, target, weight, alpha=alpha)[0]
            assert (weighted > 1.2 * plain) if more else (weighted < plain), (more, alpha, weighted, plain)
    assert torch.equal(losses.align(other, target, mask), losses.align(other, target, weight > 0))


def test_obstacle_weights_follow_the_label_through_crops_and_flips(cache, monkeypatch):
    """The obstacle share is cropped, flipped and resized with its label: here the share is the
    scene's near boxes, so after any augmentation the heavy pixels are the near ones."""
    def load_obstacles(c, entry):
        return (_scene(entry["key"])[1] > 3.2).astype(np.float32)

    monkeypatch.setattr(label_cache, "load_obstacles", load_obstacles)
    keys = ["img-%d" % i for i in range(6)]
    ds = data.DistillDataset(cache, keys, train=True, size=SIZE, obstacle_weight=4.0)
    flipped = 0
    for i in range(6):
        for seed in (5, 6, 7):
            x, y, w = ds[(i, seed)]
            assert w.dtype == torch.float32 and float(w.min()) >= 1.0 and float(w.max()) <= 4.0
            near, far = y.numpy() > 3.4, y.numpy() < 2.9
            assert (w.numpy()[near] > 2.0).mean() > 0.95 and (w.numpy()[far] < 1.5).mean() > 0.95, (i, seed)
            flipped += not torch.equal(x, ds[(i, seed)][0].flip(-1))
    assert data.DistillDataset(cache, keys, train=True, size=SIZE)[(0, 5)][2].dtype == torch.bool
    with pytest.raises(ValueError, match="obstacle_weight"):
        data.DistillDataset(cache, keys, obstacle_weight=0.5)
    monkeypatch.setattr(label_cache, "load_obstacles", lambda c, entry: None)  # an item without a mask
    assert torch.equal(data.DistillDataset(cache, keys, False, SIZE, obstacle_weight=4.0)[0][2],
                       torch.ones(SIZE))


def test_student_overfits_a_fixed_batch(cache):
    torch.manual_seed(0)
    x, y, m = (torch.stack(t) for t in zip(*[data.DistillDataset(cache, ["img-0", "img-1"], False, SIZE)[i]
                                             for i in range(2)]))
    model = fastdepth.random_student(0).train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    history = []
    for _ in range(70):
        loss, _ = losses.distill_loss(model(x), y, m)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert min(history[-5:]) < history[0] / 5, history


def _files(root):
    return sorted(os.path.relpath(p, root) for p in glob.glob(os.path.join(root, "**", "*"), recursive=True))


def test_train_outputs_checkpoints_and_resume(cache, tmp_path, monkeypatch):
    kw = dict(steps=6, batch_size=2, lr=1e-3, size=SIZE, val_every=3, ckpt_every=3, seed=3, progress=False)
    straight = train.train(cache, str(tmp_path / "a"), **kw)
    assert [e["step"] for e in straight["train"]] == [1, 2, 3, 4, 5, 6]
    assert [e["step"] for e in straight["val"]] == [3, 6] and straight["images_per_s"] > 0
    assert set(straight["train"][0]) == {"step", "loss", "ssi", "grad", "lr"}

    out = str(tmp_path / "b")
    save = train.save_checkpoint

    def crash_after_step_3(directory, *args):
        save(directory, *args)
        raise KeyboardInterrupt  # the job dies right after the step-3 checkpoint

    monkeypatch.setattr(train, "save_checkpoint", crash_after_step_3)
    with pytest.raises(KeyboardInterrupt):
        train.train(cache, out, **kw)
    monkeypatch.setattr(train, "save_checkpoint", save)
    with open(os.path.join(out, "checkpoint", "state.json")) as f:
        assert json.load(f)["step"] == 3
    with pytest.raises(FileExistsError):
        train.train(cache, out, **kw)
    with pytest.raises(ValueError, match="steps"):
        train.train(cache, out, resume=True, **dict(kw, steps=8))
    resumed = train.train(cache, out, resume=True, **kw)
    assert [e["step"] for e in resumed["train"]] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(straight["train"] + straight["val"], resumed["train"] + resumed["val"]):
        assert a["step"] == b["step"] and a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-6)
    assert straight["train"][-1]["loss"] != straight["train"][0]["loss"]

    files = _files(out)
    assert "history.json" in files and any(f.startswith("tb/events.out.tfevents") for f in files)
    with open(os.path.join(out, "history.json")) as f:
        assert json.load(f)["train"][-1]["step"] == 6
    assert sorted(os.listdir(os.path.join(out, "checkpoint"))) == [
        "model.safetensors", "optimizer.safetensors", "state.json"]
    for name in os.listdir(os.path.join(out, "checkpoint")):
        with open(os.path.join(out, "checkpoint", name), "rb") as f:
            assert not f.read(2).startswith(b"\x80")  # no pickle protocol header
    assert not [f for f in files if f.endswith((".pt", ".pth", ".pkl", ".bin"))]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(os.path.join(out, "tb")).Reload()
    assert {"train/loss", "val/loss"} <= set(events.Tags()["scalars"]) and events.Tags()["images"]

    student = fastdepth.load_student(os.path.join(out, "student"))
    a = fastdepth.load_student(str(tmp_path / "a" / "student"))
    for (k, v), w in zip(student.state_dict().items(), a.state_dict().values()):
        assert torch.allclose(v.float(), w.float(), atol=1e-5), k
    with torch.no_grad():
        assert student(torch.zeros(1, 3, 64, 96)).shape == (1, 64, 96)


def test_no_pillow_means_no_previews_not_a_failed_run(cache, tmp_path, monkeypatch, capsys):
    pytest.importorskip("tensorboard")
    monkeypatch.setitem(sys.modules, "PIL", None)  # import PIL fails, as without Pillow
    out = str(tmp_path / "run")
    train.train(cache, out, steps=2, batch_size=2, size=SIZE, val_every=1, ckpt_every=1, progress=False)
    assert "Pillow is not installed" in capsys.readouterr().err
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(os.path.join(out, "tb")).Reload()
    assert "val/loss" in events.Tags()["scalars"] and not events.Tags()["images"]


def test_cli(cache, tmp_path):
    parser = train.add_train_arguments(argparse.ArgumentParser())
    with pytest.raises(SystemExit):
        parser.parse_args(["--cache", cache, "--out", "x", "--size", "100x96"])
    args = parser.parse_args(["--cache", cache, "--out", str(tmp_path / "run"), "--steps", "1",
                              "--batch-size", "2", "--size", "64x96", "--schedule", "cosine",
                              "--no-progress"])
    assert args.size == SIZE and args.val_fraction == 0.05 and not args.resume
    assert train.run_train(args) == 0
    assert parse_spec(str(tmp_path / "run" / "student")).kind == "student_dir"
    assert train.run_train(args) == 2  # the checkpoint is there: needs --resume
    with open(str(tmp_path / "run" / "history.json")) as f:
        assert json.load(f)["config"]["ssi"] == "mse"  # the default, recorded with the run
    mae = parser.parse_args(["--cache", cache, "--out", str(tmp_path / "run"), "--steps", "1",
                             "--batch-size", "2", "--size", "64x96", "--schedule", "cosine",
                             "--no-progress", "--resume", "--ssi", "mae"])
    assert train.run_train(mae) == 2  # a resumed run keeps its loss
    with pytest.raises(SystemExit):
        parser.parse_args(["--cache", cache, "--out", "x", "--ssi", "huber"])


def test_init_fine_tunes_a_student_folder(cache, tmp_path):
    """--init: the run starts from the folder's weights (a lower first loss than the same seed from
    random weights, on the same batch); a missing folder is one clear error."""
    kw = dict(steps=2, batch_size=2, lr=1e-3, size=SIZE, val_every=1, ckpt_every=1, seed=3, progress=False)
    base = train.train(cache, str(tmp_path / "base"), **dict(kw, steps=12, lr=3e-3))
    folder = str(tmp_path / "base" / "student")
    scratch = train.train(cache, str(tmp_path / "scratch"), **kw)
    tuned = train.train(cache, str(tmp_path / "tuned"), init=folder, **kw)
    assert tuned["config"]["init"] == os.path.abspath(folder)
    assert tuned["train"][0]["loss"] < scratch["train"][0]["loss"]  # same batch, trained weights
    args = train.add_train_arguments(argparse.ArgumentParser()).parse_args(
        ["--cache", cache, "--out", str(tmp_path / "x"), "--init", str(tmp_path / "nope"), "--steps", "1",
         "--batch-size", "2", "--size", "64x96", "--no-progress"])
    assert train.run_train(args) == 2
