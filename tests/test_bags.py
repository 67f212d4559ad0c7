"""Camera-stream bags written without ROS, read back by ROS' own rosbag."""
import os

import pytest

from depth_estimation.io import bags
from conftest import REAL_BAG


def test_stream_bag_is_a_duckiebot_camera_stream(tmp_path, real_jpeg):
    rosbag = pytest.importorskip("rosbag")
    frames = bags.read_camera_frames(REAL_BAG)
    assert len(frames) == 1 and frames[0].camera_info.width == 1280
    out = str(tmp_path / "s.bag")
    stamps = bags.camera_stream_bag(frames, out, veh="alpha", count=6, rate=30.0, bad={2: b""}, tail=1.0)
    assert len(stamps) == 6 and all(abs(b - a - 1e9 / 30) <= 1 for a, b in zip(stamps, stamps[1:]))
    images, infos, ends = [], [], 0
    with rosbag.Bag(out) as bag:
        for topic, msg, t in bag.read_messages():
            if topic == "/alpha/camera_node/image/compressed":
                images.append(msg)
                assert t.to_nsec() == msg.header.stamp.to_nsec()
            elif topic == "/alpha/camera_node/camera_info":
                infos.append(msg)
            elif topic == bags.END_TOPIC:
                ends += 1
    assert [m.header.stamp.to_nsec() for m in images] == stamps
    assert [m.header.stamp.to_nsec() for m in infos] == stamps  # camera_info shares the frame's stamp
    assert bytes(images[0].data) == real_jpeg and images[2].data in (b"", [])
    assert images[0].format == "jpg" and infos[0].width == 1280 and infos[0].height == 720
    assert ends == 4


def test_stream_bag_never_overwrites_silently(tmp_path):
    frames = bags.read_camera_frames(REAL_BAG)
    out = tmp_path / "s.bag"
    out.write_bytes(b"keep me")
    with pytest.raises(FileExistsError):
        bags.camera_stream_bag(frames, str(out), count=1)
    assert out.read_bytes() == b"keep me"
    assert bags.main([REAL_BAG, str(out), "--seconds", "0.1"]) == 1
    assert out.read_bytes() == b"keep me"
    assert bags.main([REAL_BAG, str(out), "--seconds", "0.1", "--force"]) == 0
    assert len(list(bags.iter_messages(str(out), ["/duckiebot/camera_node/image/compressed"]))) == 3


def test_stream_bag_is_written_atomically(tmp_path, monkeypatch):
    frames = bags.read_camera_frames(REAL_BAG)
    out = tmp_path / "s.bag"
    bags.camera_stream_bag(frames, str(out), count=2)
    assert sorted(os.listdir(tmp_path)) == ["s.bag"]  # no temporary file left beside it
    before = out.read_bytes()
    monkeypatch.setattr(bags.MessageBuilder, "compressed_image", lambda *a: 1 / 0)
    with pytest.raises(ZeroDivisionError):  # a writer failing half way leaves the old bag whole
        bags.camera_stream_bag(frames, str(out), count=2, overwrite=True)
    assert out.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["s.bag"]
