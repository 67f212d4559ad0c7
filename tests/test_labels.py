"""Teacher labels for distillation: cache layout, reuse, sharding, bags, bad input, CLI."""
import argparse
import json
import os

import cv2
import numpy as np
import pytest

from depth_estimation.io import bags
from depth_estimation.distill import label_cache, labels
from depth_estimation.runtime.estimator import DepthEstimator
from depth_fixtures import bad_frames, save_tiny_da2

from conftest import REAL_BAG

SIZE = 28  # teacher input short side: fast


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """The tiny random model with its output scaled from ~1e-7 to ~0.1 (float16 keeps 3 digits there)."""
    import torch

    from depth_fixtures import tiny_da2

    model = tiny_da2(0)
    with torch.no_grad():  # the head ends in ReLU(conv3(...)): scaling conv3 scales the output
        model.head.conv3.weight.mul_(1e6)
        model.head.conv3.bias.mul_(1e6)
    path = str(tmp_path_factory.mktemp("models") / "teacher")
    model.save_pretrained(path, safe_serialization=True)
    return path


def image(seed, w=64, h=48):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)  # smooth, distinct, JPEG-stable content
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def folder(path, sizes, ext=".png"):
    os.makedirs(str(path), exist_ok=True)
    for i, (w, h) in enumerate(sizes):
        cv2.imwrite(str(path / ("img%02d%s" % (i, ext))), image(i, w, h))
    return str(path)


def run(teacher, cache, **kw):
    kw.setdefault("input_size", SIZE)
    return labels.label(teacher, str(cache), device="cpu", progress=False, **kw)


def npy_files(cache):
    return sorted(os.path.join(r, n) for r, _d, ns in os.walk(str(cache)) for n in ns if n.endswith(".npy"))


def test_labels_are_cached_and_reused(teacher, tmp_path):
    src = folder(tmp_path / "img", [(64, 48)] * 3 + [(48, 64)])
    cache = tmp_path / "cache"
    assert run(teacher, cache, images=src) == {"seen": 4, "labelled": 4, "skipped": 0, "failed": 0}
    files = npy_files(cache)
    stamps = [os.stat(f).st_mtime_ns for f in files]
    assert len(files) == 4 and json.loads((cache / "teacher.json").read_text())["input_size"] == SIZE
    assert run(teacher, cache, images=src) == {"seen": 4, "labelled": 0, "skipped": 4, "failed": 0}
    assert [os.stat(f).st_mtime_ns for f in npy_files(cache)] == stamps
    assert len((cache / "index.jsonl").read_text().splitlines()) == 4


def test_label_is_the_teacher_output_resized(teacher, tmp_path):
    src = folder(tmp_path / "img", [(64, 48), (64, 48), (48, 64), (90, 40)])  # batched and single
    est = DepthEstimator(teacher, input_size=SIZE, device="cpu").load()
    for label_size in (24, 384):
        cache = tmp_path / ("cache%d" % label_size)
        run(teacher, cache, images=src, label_size=label_size, batch_size=4)
        entries = {e["source"]: e for e in label_cache.iter_cache(str(cache))}
        assert len(entries) == 4
        for name in sorted(os.listdir(src)):
            entry = entries[os.path.join(src, name)]
            rgb = cv2.cvtColor(cv2.imread(os.path.join(src, name)), cv2.COLOR_BGR2RGB)
            label = np.load(label_cache.item_path(str(cache), entry["key"], ".npy"))
            h, w = rgb.shape[:2]
            short = min(label_size, h, w)
            assert label.dtype == np.float16 and min(label.shape) == short
            assert abs(label.shape[1] / label.shape[0] - w / h) < 1.0 / short + 1e-9  # the image's aspect
            assert entry["label_hw"] == list(label.shape) and (entry["height"], entry["width"]) == (h, w)
            ref = cv2.resize(est.infer(rgb), (label.shape[1], label.shape[0]), interpolation=cv2.INTER_LINEAR)
            np.testing.assert_allclose(label.astype(np.float32), ref, rtol=2e-3,
                                       atol=2e-3 * np.abs(ref).max())
            assert open(label_cache.item_path(str(cache), entry["key"], ".img"), "rb").read() == \
                open(os.path.join(src, name), "rb").read()


def test_shards_split_the_list_without_overlap_or_gap(teacher, tmp_path):
    src = folder(tmp_path / "img", [(64, 48)] * 10, ext=".JPG")
    keys = []
    for i in range(3):
        counts = run(teacher, tmp_path / ("c%d" % i), images=src, shard=(i, 3))
        keys.append({e["key"] for e in label_cache.iter_cache(str(tmp_path / ("c%d" % i)))})
        assert counts["labelled"] == counts["seen"] == len(keys[-1]) == (4 if i == 0 else 3)
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    run(teacher, tmp_path / "all", images=src)
    assert keys[0] | keys[1] | keys[2] == {e["key"] for e in label_cache.iter_cache(str(tmp_path / "all"))}
    shared = tmp_path / "shared"  # shards may also share one cache
    for i in range(3):
        run(teacher, shared, images=src, shard=(i, 3))
    assert run(teacher, shared, images=src)["skipped"] == 10


def test_corrupt_image_fails_and_others_are_labelled(teacher, tmp_path):
    src = folder(tmp_path / "img", [(64, 48)] * 2, ext=".jpg")
    good = open(os.path.join(src, "img00.jpg"), "rb").read()
    (tmp_path / "img" / "sub").mkdir()
    (tmp_path / "img" / "sub" / "bad.jpg").write_bytes(bad_frames(good)["truncated"])
    (tmp_path / "img" / "notes.txt").write_text("not an image")
    cache = tmp_path / "cache"
    assert run(teacher, cache, images=src) == {"seen": 3, "labelled": 2, "skipped": 0, "failed": 1}
    assert run(teacher, cache, images=src) == {"seen": 3, "labelled": 0, "skipped": 2, "failed": 1}


def test_bag_frames_are_labelled_once_per_content(teacher, tmp_path):
    real = bags.read_camera_frames(REAL_BAG)
    same = str(tmp_path / "same.bag")
    bags.camera_stream_bag(real, same, count=3)
    counts = run(teacher, tmp_path / "c1", bags=same)
    assert counts == {"seen": 1, "labelled": 1, "skipped": 0, "failed": 0}
    (entry,) = label_cache.iter_cache(str(tmp_path / "c1"))
    assert entry["label_hw"] == [384, 683]
    assert entry["source"].endswith(":/duckiebot/camera_node/image/compressed:0")

    frames = [bags.CameraFrame(cv2.imencode(".jpg", image(s))[1].tobytes(), "jpeg", "cam", None)
              for s in range(3)]
    bags.camera_stream_bag(frames, str(tmp_path / "diff.bag"), veh="other", count=3)
    assert run(teacher, tmp_path / "c2", bags=str(tmp_path / "*.bag"))["labelled"] == 4
    assert run(teacher, tmp_path / "c3", bags=str(tmp_path / "*.bag"),
               topic="/other/camera_node/image/compressed")["labelled"] == 3
    assert run(teacher, tmp_path / "c4", bags=str(tmp_path / "*.bag"), topic="/none")["seen"] == 0


def test_other_teacher_on_a_labelled_cache_raises(teacher, tmp_path):
    src = folder(tmp_path / "img", [(64, 48)])
    other = save_tiny_da2(str(tmp_path / "other"), seed=1)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"garbage")
    run(teacher, tmp_path / "empty", images=str(bad))  # teacher.json written, but no labels
    assert run(other, tmp_path / "empty", images=src)["labelled"] == 1
    with pytest.raises(ValueError, match="teacher"):
        run(teacher, tmp_path / "empty", images=src)
    with pytest.raises(ValueError, match="input size"):
        run(other, tmp_path / "empty", images=src, input_size=56)


def test_iter_cache_and_load_item(teacher, tmp_path):
    src = folder(tmp_path / "img", [(64, 48), (48, 64), (80, 60)])
    cache = str(tmp_path / "cache")
    run(teacher, cache, images=src, label_size=32)
    entries = list(label_cache.iter_cache(cache))
    assert len(entries) == 3
    for entry in entries:
        rgb, label = label_cache.load_item(cache, entry)
        assert rgb.dtype == np.uint8 and rgb.shape == (entry["height"], entry["width"], 3)
        assert label.dtype == np.float32 and list(label.shape) == entry["label_hw"] and min(label.shape) == 32
    os.remove(label_cache.item_path(cache, entries[0]["key"], ".npy"))
    assert [e["key"] for e in label_cache.iter_cache(cache)] == [e["key"] for e in entries[1:]]


def test_cli(teacher, tmp_path, capsys):
    src = folder(tmp_path / "img", [(64, 48)] * 4)

    def cli(*argv):
        args = labels.add_label_arguments(argparse.ArgumentParser()).parse_args(list(argv))
        return labels.run_label(args)

    base = ["--teacher", teacher, "--cache", str(tmp_path / "c"), "--input-size", str(SIZE), "--no-progress"]
    assert cli(*base, "--images", src, "--shard", "1/2", "--device", "cpu") == 0
    assert "seen 2, labelled 2" in capsys.readouterr().out
    for extra in (["--images", src, "--shard", "2/2"], ["--images", src, "--bags", "x.bag"], [],
                  ["--bags", str(tmp_path / "none*.bag")], ["--images", src, "--input-size", "-5"]):
        assert cli(*base, *extra) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1
    # the runtime options are the shared ones (depth_estimation.options): 0 = the teacher's own size
    args = labels.add_label_arguments(argparse.ArgumentParser()).parse_args(["--teacher", "t",
                                                                             "--cache", "c"])
    assert (args.backend, args.device, args.input_size, args.threads) == ("torch", "auto", 0, 0)
    assert args.progress


def test_a_label_without_its_index_line_is_indexed_not_redone(teacher, tmp_path):
    src = folder(tmp_path / "img", [(64, 48)] * 2)
    cache = tmp_path / "cache"
    run(teacher, cache, images=src)
    index = cache / "index.jsonl"
    lines = index.read_text().splitlines()
    index.write_text(lines[0] + "\n" + lines[1][:10])  # as if stopped while appending the second line
    assert run(teacher, cache, images=src)["skipped"] == 2
    keys = [e["key"] for e in label_cache.iter_cache(str(cache))]
    assert keys == [json.loads(line)["key"] for line in lines]
