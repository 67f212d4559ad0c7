"""NYUv2 .mat / colour + 16-bit depth files -> ROS 1 bags, read back with rosbags and ROS' rosbag."""
import glob
import json
import os
import shutil

import numpy as np
import pytest

from depth_estimation.evaluation import convert_rgbd
from depth_estimation.io.bags import iter_messages

from conftest import ROOT

N = 5
TRAIN = [1, 3, 4]  # 1-based, as in MATLAB
TEST = [5, 2]  # deliberately not sorted: the bag keeps splits.mat order
TUM = os.path.join(ROOT, "assets", "frames")  # TUM fr1/desk: rgb_1.png, rgb_2.png
TUM_DEPTH = os.path.join(TUM, "depth")  # depth_1.png, depth_2.png (16-bit, metres * 5000)
TUM_K = (520.9, 521.0, 325.1, 249.7)


def nyu_rgb(k):
    """Frame k (0-based) as MATLAB sees it: 480x640x3, rows/cols/channels all distinguishable."""
    r, c, ch = np.meshgrid(np.arange(480), np.arange(640), np.arange(3), indexing="ij")
    img = ((r * 3 + c * 7 + ch * 50 + k * 11) % 256).astype(np.uint8)
    img[10, 20, :] = (k, 100 + k, 200 + k)  # pixel (row 10, col 20) encodes the frame
    return img


def nyu_depth(k):
    r, c = np.meshgrid(np.arange(480), np.arange(640), indexing="ij")
    d = (0.5 + k + r * 1e-3 + c * 1e-5).astype(np.float32)
    d[0, :] = 0  # no measurement
    d[10, 20] = 1.0 + k
    return d


@pytest.fixture(scope="module")
def nyu_files(tmp_path_factory):
    h5py = pytest.importorskip("h5py")
    scipy_io = pytest.importorskip("scipy.io")
    root = tmp_path_factory.mktemp("nyu")
    mat, splits = str(root / "nyu_depth_v2_labeled.mat"), str(root / "splits.mat")
    with h5py.File(mat, "w") as f:  # the real v7.3 layout as h5py shows it
        f.create_dataset("images", data=np.stack([nyu_rgb(k).transpose(2, 1, 0) for k in range(N)]))
        f.create_dataset("depths", data=np.stack([nyu_depth(k).T for k in range(N)]))
    assert h5py.File(mat, "r")["images"].shape == (N, 3, 640, 480)
    scipy_io.savemat(splits, {"trainNdxs": np.array(TRAIN, np.float64).reshape(-1, 1),
                              "testNdxs": np.array(TEST, np.float64).reshape(-1, 1)})
    return mat, splits


def read_bag(path, ns):
    """{topic: [msg, ...]} and the bag times per topic, with rosbags."""
    import cv2

    image_t, depth_t, info_t = convert_rgbd.rgbd_topics(ns)
    dataset_t = "/%s/dataset" % ns
    out = {image_t: [], depth_t: [], info_t: [], dataset_t: []}
    times = {image_t: [], depth_t: [], info_t: [], dataset_t: []}
    for topic, t, msg in iter_messages(path):
        out[topic].append(msg)
        times[topic].append(t)
    rgbs = [cv2.imdecode(np.asarray(m.data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1] for m in out[image_t]]
    depths = []
    for m in out[depth_t]:
        assert m.encoding == "32FC1" and m.is_bigendian == 0 and m.step == 4 * m.width
        depths.append(np.frombuffer(bytes(m.data), "<f4").reshape(m.height, m.width))
    return out, times, rgbs, depths


def stamp_ns(msg):
    return msg.header.stamp.sec * 10 ** 9 + msg.header.stamp.nanosec


def test_nyu_test_split_is_the_1_based_frames(nyu_files, tmp_path):
    mat, splits = nyu_files
    out = convert_rgbd.nyu2bag(mat, splits, str(tmp_path), split="test", progress=False)
    assert out == str(tmp_path / "nyu_test.bag") and os.path.exists(out)
    assert not os.path.exists(out + ".partial")
    msgs, times, rgbs, depths = read_bag(out, "nyu")
    image_t, depth_t, info_t = convert_rgbd.rgbd_topics("nyu")
    assert image_t == "/nyu/camera_node/image/compressed" and depth_t == "/nyu/depth_gt/image_raw"
    assert info_t == "/nyu/camera_node/camera_info"
    expected = [i - 1 for i in TEST]  # 0-based frames 4, 1
    assert len(rgbs) == len(depths) == len(msgs[info_t]) == len(TEST)
    for rgb, depth, k in zip(rgbs, depths, expected):
        assert rgb.shape == (480, 640, 3) and depth.shape == (480, 640)
        assert tuple(rgb[10, 20]) == (k, 100 + k, 200 + k)  # right frame, right orientation, RGB order
        assert np.array_equal(rgb, nyu_rgb(k))  # PNG is lossless
        assert np.array_equal(depth, nyu_depth(k))  # metres, bit-exact
        assert depth[10, 20] == 1.0 + k and (depth[0] == 0).all()
    assert all(m.format == "png" for m in msgs[image_t])
    for topic in (image_t, depth_t, info_t):  # same stamps on all three topics, 0.1 s apart, bag time = stamp
        assert [stamp_ns(m) for m in msgs[topic]] == [int(1.7e18), int(1.7e18) + 10 ** 8]
        assert times[topic] == pytest.approx([1.7e9, 1.7e9 + 0.1])
        assert len({m.header.frame_id for m in msgs[topic]}) == 1
    info = msgs[info_t][0]
    assert (info.width, info.height, info.distortion_model) == (640, 480, "plumb_bob")
    # the bag says which dataset it holds, once, before the first frame
    assert [m.data for m in msgs["/nyu/dataset"]] == ["nyu"] and times["/nyu/dataset"] == [1.7e9]
    assert list(info.K) == pytest.approx([518.8579, 0, 325.5824, 0, 519.4696, 253.7362, 0, 0, 1])
    assert list(info.P) == pytest.approx([518.8579, 0, 325.5824, 0, 0, 519.4696, 253.7362, 0, 0, 0, 1, 0])


def test_nyu_bag_reads_with_ros_rosbag(nyu_files, tmp_path):
    rosbag = pytest.importorskip("rosbag")
    mat, splits = nyu_files
    out = convert_rgbd.nyu2bag(mat, splits, str(tmp_path), split="train", progress=False, start=100.0, period=0.5)
    seen = {}
    with rosbag.Bag(out) as bag:
        types = {t: v.msg_type for t, v in bag.get_type_and_topic_info().topics.items()}
        for topic, msg, t in bag.read_messages():
            assert t.to_nsec() == (msg.header.stamp.to_nsec() if topic != "/nyu/dataset" else 100 * 10 ** 9)
            seen.setdefault(topic, []).append(msg)
    assert types == {"/nyu/camera_node/image/compressed": "sensor_msgs/CompressedImage",
                     "/nyu/depth_gt/image_raw": "sensor_msgs/Image",
                     "/nyu/camera_node/camera_info": "sensor_msgs/CameraInfo",
                     "/nyu/dataset": "std_msgs/String"}
    assert [m.data for m in seen["/nyu/dataset"]] == ["nyu"]
    stamps = [[m.header.stamp.to_nsec() for m in seen[t]] for t in types if t != "/nyu/dataset"]
    assert stamps[0] == stamps[1] == stamps[2] == [100 * 10 ** 9, 100 * 10 ** 9 + 5 * 10 ** 8, 101 * 10 ** 9]
    for m, k in zip(seen["/nyu/depth_gt/image_raw"], [i - 1 for i in TRAIN]):
        assert np.array_equal(np.frombuffer(m.data, "<f4").reshape(480, 640), nyu_depth(k))
    assert seen["/nyu/camera_node/camera_info"][0].K[0] == pytest.approx(518.8579)


def test_nyu_all_limit_jpeg(nyu_files, tmp_path):
    mat, _ = nyu_files
    out = convert_rgbd.nyu2bag(mat, None, str(tmp_path), split="all", limit=3, jpeg=True, progress=False, ns="x")
    assert out.endswith("nyu_all.bag")
    msgs, _, rgbs, depths = read_bag(out, "x")
    assert len(rgbs) == 3 and [m.format for m in msgs["/x/camera_node/image/compressed"]] == ["jpeg"] * 3
    for k, (rgb, depth) in enumerate(zip(rgbs, depths)):
        import cv2

        ok, buf = cv2.imencode(".jpg", nyu_rgb(k)[:, :, ::-1].copy(), [int(cv2.IMWRITE_JPEG_QUALITY), 95])
        assert np.array_equal(rgb, cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1])  # JPEG quality 95 of frame k
        assert np.median(np.abs(rgb.astype(int) - nyu_rgb(k))) <= 3  # lossy but the same picture
        assert np.array_equal(depth, nyu_depth(k))


def test_nyu_refuses_overwrite_without_force(nyu_files, tmp_path):
    mat, splits = nyu_files
    out = tmp_path / "nyu_test.bag"
    out.write_bytes(b"keep me")
    with pytest.raises(FileExistsError):
        convert_rgbd.nyu2bag(mat, splits, str(tmp_path), split="test", progress=False)
    assert out.read_bytes() == b"keep me"
    argv = ["nyu", "--mat", mat, "--splits", splits, "--out", str(tmp_path)]
    assert convert_rgbd.main(argv) == 1
    assert out.read_bytes() == b"keep me"
    assert convert_rgbd.main(argv + ["--force", "--limit", "1"]) == 0
    assert len(read_bag(str(out), "nyu")[2]) == 1


def test_nyu_rejects_out_of_range_split(nyu_files, tmp_path):
    import scipy.io

    mat, _ = nyu_files
    bad = str(tmp_path / "bad.mat")
    scipy.io.savemat(bad, {"testNdxs": np.array([[0], [1]], np.float64), "trainNdxs": np.array([[1]], np.float64)})
    with pytest.raises(ValueError, match="1-based"):  # a 0 means someone wrote 0-based indices
        convert_rgbd.nyu2bag(mat, bad, str(tmp_path / "o"), split="test", progress=False)
    assert not glob.glob(str(tmp_path / "o" / "*"))


@pytest.fixture
def tum_dir():
    """The TUM frames this checkout ships (assets/frames); a missing file is a broken checkout."""
    for path in (os.path.join(TUM, "rgb_2.png"), os.path.join(TUM_DEPTH, "depth_2.png")):
        assert os.path.isfile(path), path
    return TUM


def test_tum_frames_give_the_right_metres(tum_dir, tmp_path):
    import cv2

    out = str(tmp_path / "tum.bag")
    assert convert_rgbd.main(["rgbd", "--rgb", os.path.join(tum_dir, "rgb_*.png"), "--depth",
                              os.path.join(TUM_DEPTH, "depth_*.png"), "--depth-scale", "5000",
                              "--fx", "520.9", "--fy", "521.0", "--cx", "325.1", "--cy", "249.7",
                              "--out", out]) == 0
    msgs, _, rgbs, depths = read_bag(out, "rgbd")
    assert len(rgbs) == len(depths) == 2
    for i, (rgb, depth) in enumerate(zip(rgbs, depths), 1):
        raw = cv2.imread(os.path.join(TUM_DEPTH, "depth_%d.png" % i), cv2.IMREAD_UNCHANGED)
        assert raw.dtype == np.uint16 and (raw == 0).any() and (raw > 0).any()
        want = raw.astype(np.float32) / 5000
        for r, c in [(0, 0), (240, 320), (100, 500), (470, 30)] + [tuple(p) for p in np.argwhere(raw > 0)[:3]]:
            assert depth[r, c] == pytest.approx(raw[r, c] / 5000.0, rel=1e-6)
        assert np.array_equal(depth, want) and (depth[raw == 0] == 0).all()
        assert 0.3 < np.median(depth[raw > 0]) < 5  # a desk at Kinect range, in metres
        bgr = cv2.imread(os.path.join(tum_dir, "rgb_%d.png" % i), cv2.IMREAD_COLOR)
        assert np.array_equal(rgb, bgr[:, :, ::-1])
    info = msgs["/rgbd/camera_node/camera_info"][0]
    assert list(info.K) == pytest.approx([520.9, 0, 325.1, 0, 521.0, 249.7, 0, 0, 1])
    stamps = [[stamp_ns(m) for m in msgs[t]] for t in convert_rgbd.rgbd_topics("rgbd")]
    assert stamps[0] == stamps[1] == stamps[2] and stamps[0][1] - stamps[0][0] == 10 ** 8
    assert [m.data for m in msgs["/rgbd/dataset"]] == ["rgbd"]  # not NYU: depth-eval --crop auto uses none


def test_rgbd_default_intrinsics_and_overwrite(tum_dir, tmp_path):
    out = tmp_path / "d.bag"
    convert_rgbd.rgbd2bag(os.path.join(tum_dir, "rgb_1.png"), os.path.join(TUM_DEPTH, "depth_1.png"), 5000,
                          str(out), progress=False)
    info = read_bag(str(out), "rgbd")[0]["/rgbd/camera_node/camera_info"][0]
    assert list(info.K) == pytest.approx([640, 0, 320, 0, 640, 240, 0, 0, 1])
    with pytest.raises(FileExistsError):
        convert_rgbd.rgbd2bag(os.path.join(tum_dir, "rgb_1.png"), os.path.join(TUM_DEPTH, "depth_1.png"),
                              5000, str(out), progress=False)
    convert_rgbd.rgbd2bag(os.path.join(tum_dir, "rgb_*.png"), os.path.join(TUM_DEPTH, "depth_*.png"), 5000,
                          str(out), force=True, progress=False)
    assert len(read_bag(str(out), "rgbd")[2]) == 2


def test_rgbd_refuses_unequal_counts(tum_dir, tmp_path):
    for name in ("rgb_1.png", "rgb_2.png", "depth/depth_1.png"):
        shutil.copy(os.path.join(tum_dir, name), str(tmp_path / os.path.basename(name)))
    out = str(tmp_path / "u.bag")
    with pytest.raises(ValueError, match="2 colour images .* but 1 depth"):
        convert_rgbd.rgbd2bag(str(tmp_path / "rgb_*.png"), str(tmp_path / "depth_*.png"), 5000, out, progress=False)
    assert convert_rgbd.main(["rgbd", "--rgb", str(tmp_path / "rgb_*.png"), "--depth", str(tmp_path / "depth_*.png"),
                              "--depth-scale", "5000", "--out", out]) == 1
    assert not os.path.exists(out) and not os.path.exists(out + ".partial")


def test_console_scripts_and_atomic_output(tmp_path):
    import cv2

    src = tmp_path / "src"
    src.mkdir()
    for i in range(2):
        assert cv2.imwrite(str(src / ("rgb_%d.png" % i)), np.full((24, 32, 3), 40 * i, np.uint8))
        assert cv2.imwrite(str(src / ("depth_%d.png" % i)), np.full((24, 32), 1000 * (i + 1), np.uint16))
    out_dir = tmp_path / "out"
    argv = ["--rgb", str(src / "rgb_*.png"), "--depth", str(src / "depth_*.png"), "--depth-scale", "1000",
            "--out", str(out_dir / "r.bag"), "--ns", "cam", "--period", "0.5"]
    assert convert_rgbd.rgbd_main(argv) == 0  # depth-rgbd2bag
    msgs, _, rgbs, depths = read_bag(str(out_dir / "r.bag"), "cam")
    assert len(rgbs) == 2 and depths[1][0, 0] == 2.0
    assert sorted(os.listdir(out_dir)) == ["r.bag"]  # no temporary file left beside it
    before = (out_dir / "r.bag").read_bytes()
    assert convert_rgbd.rgbd_main(argv) == 1  # never overwritten without --force
    assert (out_dir / "r.bag").read_bytes() == before
    with pytest.raises(ValueError, match="no frames"):  # a failed write leaves the old bag whole
        convert_rgbd.write_rgbd_bag([], str(out_dir / "r.bag"), (30, 30, 16, 12), force=True, progress=False)
    assert (out_dir / "r.bag").read_bytes() == before and sorted(os.listdir(out_dir)) == ["r.bag"]
    with pytest.raises(SystemExit):  # depth-nyu2bag keeps its required flags
        convert_rgbd.nyu_main(["--out", str(out_dir)])


def _eigen_only_predictions(pred_dir, count):
    """Oracle depth for the NYU fixture frames, wrong only outside the Eigen crop (rows < 45)."""
    pred_dir.mkdir()
    for i in range(count):
        pred = _nyu_oracle_depth(i)
        pred[:45] = 9.0
        np.save(pred_dir / ("%06d.npy" % i), pred)


def _nyu_oracle_depth(k):
    depth = nyu_depth(k).copy()
    depth[depth == 0] = 1.0  # row 0 has no ground truth: any value
    return depth


def test_nyu_bag_in_another_namespace_keeps_the_eigen_crop(nyu_files, tmp_path):
    """depth-nyu2bag --ns x records the dataset in the bag, so depth-eval --crop auto still crops."""
    from depth_estimation.evaluation import evaluate

    mat, _ = nyu_files
    assert convert_rgbd.nyu_main(["--mat", mat, "--out", str(tmp_path), "--split", "all", "--limit", "2",
                                  "--ns", "x"]) == 0
    bag = str(tmp_path / "nyu_all.bag")
    _eigen_only_predictions(tmp_path / "p", 2)
    out = tmp_path / "e.json"
    assert evaluate.main(["--bag", bag, "--predictions", str(tmp_path / "p"), "--pred-kind", "depth",
                          "--align", "none", "--crop", "auto", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["crop"] == "auto:eigen" and result["dataset"] == "nyu"
    assert result["depth_topic"] == "/x/depth_gt/image_raw"
    assert [f["valid_pixels"] for f in result["per_frame"]] == [(471 - 45) * (601 - 41)] * 2
    assert result["metrics"]["abs_rel"] == 0
    uncropped = evaluate.evaluate(bag, "none", predictions=str(tmp_path / "p"), pred_kind="depth",
                                  crop="none")
    assert uncropped["metrics"]["abs_rel"] > 0


def test_rgbd_bag_in_the_nyu_namespace_is_not_cropped(tmp_path):
    """The recorded dataset wins over the old /nyu/ topic rule: a depth-rgbd2bag bag is never NYU."""
    import cv2

    from depth_estimation.evaluation import evaluate

    src = tmp_path / "src"
    src.mkdir()
    assert cv2.imwrite(str(src / "rgb_0.png"), np.full((480, 640, 3), 90, np.uint8))
    assert cv2.imwrite(str(src / "depth_0.png"), np.full((480, 640), 3000, np.uint16))
    bag = str(tmp_path / "r.bag")
    assert convert_rgbd.rgbd_main(["--rgb", str(src / "rgb_*.png"), "--depth", str(src / "depth_*.png"),
                                   "--depth-scale", "1000", "--out", bag, "--ns", "nyu"]) == 0
    (tmp_path / "p").mkdir()
    np.save(tmp_path / "p" / "000000.npy", np.full((480, 640), 3.0, np.float32))
    result = evaluate.evaluate(bag, "none", predictions=str(tmp_path / "p"), pred_kind="depth")
    assert result["crop"] == "auto:none" and result["dataset"] == "rgbd"
    assert result["per_frame"][0]["valid_pixels"] == 480 * 640
