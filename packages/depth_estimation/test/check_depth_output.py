#!/usr/bin/env python3
"""rostest checker: listens to depth_node while a camera bag plays, then asserts per ``~mode``.

Modes: ``stream`` (headers, encodings, sizes, camera_info passthrough, diagnostics keys),
``corrupt`` (depth for every good frame, rejected count = bad frames, nothing dropped, frames
with an EXIF orientation keep the sensor's geometry),
``robust`` (inference failures counted and the stream going on; a camera_info of another size is
counted apart and never passed through; exact frame accounting),
``backlog`` (camera faster than the model: bounded age, drops counted, no invented frames).
The bag's JSON sidecar (written by tests/depth_fixtures.py) lists the stamps and good frames.
"""
import json
from collections import Counter
import threading
import time
import unittest

import cv2
import numpy as np
import rospy
import rostest
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Empty

REQUIRED_KEYS = ("inference_ms_p50", "inference_ms_p95", "end_to_end_ms_p50", "decode_ms_p50",
                 "postprocess_ms_p50", "input_hz", "output_hz", "frames_in", "frames_out",
                 "frames_dropped", "frames_rejected", "frames_paused", "frames_throttled", "frames_idle", "paused",
                 "process_frequency", "model", "backend", "device")


def key(header):
    return (header.stamp.secs, header.stamp.nsecs, header.frame_id)


class DepthOutputCheck(unittest.TestCase):
    def setUp(self):
        rospy.init_node("check_depth_output")
        self.mode = rospy.get_param("~mode")
        with open(rospy.get_param("~expected")) as f:
            self.expected = json.load(f)
        ns = "/%s/depth_node/" % rospy.get_param("~veh")
        self.lock = threading.Lock()
        self.got = {"depth": [], "color": [], "jpeg": [], "info": [], "diag": []}
        self.ended = threading.Event()
        subs = (("depth/image_raw", Image, "depth"), ("depth/colorized", Image, "color"),
                ("depth/colorized/compressed", CompressedImage, "jpeg"), ("depth/camera_info", CameraInfo, "info"))
        self.subs = [rospy.Subscriber(ns + topic, cls, self.store, callback_args=name, queue_size=100,
                                      buff_size=2 ** 26) for topic, cls, name in subs]
        self.subs.append(rospy.Subscriber("/diagnostics", DiagnosticArray, self.store, callback_args="diag"))
        self.subs.append(rospy.Subscriber("/stream_end", Empty, lambda _m: self.ended.set()))

    def store(self, msg, name):
        with self.lock:
            self.got[name].append((rospy.get_time(), msg))

    def wait_for_end(self):
        deadline = time.time() + float(rospy.get_param("~timeout", 150.0))
        while not self.ended.is_set():
            self.assertLess(time.time(), deadline, "the bag never reached /stream_end")
            time.sleep(0.1)
        last_frame = self.expected["stamps_ns"][-1] / 1e9
        tail_end = last_frame + float(rospy.get_param("~tail", 3.0)) - 0.5
        while rospy.get_time() < tail_end and time.time() < deadline:  # let the node finish and report
            time.sleep(0.1)

    def last_diag(self):
        statuses = [s for _t, arr in self.got["diag"] for s in arr.status if "depth_node" in s.name]
        self.assertTrue(statuses, "no DiagnosticStatus named after depth_node on /diagnostics")
        return statuses, {kv.key: kv.value for kv in statuses[-1].values}

    def camera_keys(self, good_only=False):
        e = self.expected
        return [divmod(ns, 10 ** 9) + (e["frame_id"],)
                for ns, ok in zip(e["stamps_ns"], e["good"]) if ok or not good_only]

    def test_depth_output(self):
        self.wait_for_end()
        with self.lock:
            got = {k: list(v) for k, v in self.got.items()}
        self.got = got
        depth_keys = [key(m.header) for _t, m in got["depth"]]
        self.assertGreaterEqual(len(depth_keys), 3, "too few depth frames: %d" % len(depth_keys))
        self.assertEqual(len(depth_keys), len(set(depth_keys)), "a camera frame got depth twice")
        self.assertTrue(set(depth_keys) <= set(self.camera_keys()), "depth with a stamp no camera frame had")
        self.assertEqual(depth_keys, sorted(depth_keys), "depth frames out of order")
        getattr(self, "check_" + self.mode)(depth_keys)

    def check_stream(self, depth_keys):
        w, h = self.expected["width"], self.expected["height"]
        for _t, m in self.got["depth"]:
            self.assertEqual((m.encoding, m.width, m.height, m.step), ("32FC1", w, h, 4 * w))
            values = np.frombuffer(m.data, np.float32)
            self.assertEqual(values.size, w * h)
            self.assertTrue(np.isfinite(values).all())
        self.assertTrue(self.got["color"] and self.got["jpeg"], "no colorized output")
        # Outputs go out with queue_size=1 (the newest only, as ROS camera drivers do): a reader slower
        # than the node (this checker, on a busy machine) loses messages of each topic independently,
        # so a colour image may arrive whose depth twin did not; both carry a camera frame's stamp.
        camera = set(self.camera_keys())
        for _t, m in self.got["color"]:
            self.assertEqual((m.encoding, m.width, m.height), ("bgr8", w, h))
            self.assertIn(key(m.header), camera, "colorized frame with a stamp no camera frame had")
        for _t, m in self.got["jpeg"]:
            image = cv2.imdecode(np.frombuffer(m.data, np.uint8), cv2.IMREAD_COLOR)
            self.assertEqual(image.shape, (h, w, 3))
            self.assertIn(key(m.header), camera, "colorized JPEG with a stamp no camera frame had")
        both = set(depth_keys) & {key(m.header) for _t, m in self.got["color"]}
        self.assertTrue(both, "no colorized frame stamped like a depth frame")
        info_keys = [key(m.header) for _t, m in self.got["info"]]
        self.assertTrue(info_keys, "no camera_info passed through")
        self.assertTrue(set(info_keys) <= camera, "camera_info with a stamp no camera frame had")
        self.assertTrue(set(info_keys) & set(depth_keys), "no camera_info stamped like a depth frame")
        for _t, m in self.got["info"]:
            self.assertEqual((m.width, m.height), (w, h))
            self.assertEqual(len(m.K), 9)
        statuses, values = self.last_diag()
        missing = [k for k in REQUIRED_KEYS if k not in values]
        self.assertFalse(missing, "diagnostics lack %s" % missing)
        self.assertGreaterEqual(int(values["frames_out"]), len(depth_keys))  # (queue_size=1, see above)
        self.assertEqual(int(values["frames_rejected"]), 0)
        self.assertGreater(float(values["inference_ms_p50"]), 0.0)
        self.assertGreater(float(values["rss_mb"]), 50.0, "the node's resident memory is not reported")
        self.assertIn("gpu_mem_mb", values)

    def check_corrupt(self, depth_keys):
        good = self.camera_keys(good_only=True)
        self.assertEqual(depth_keys, good, "depth must come for every good frame and only for those")
        _statuses, values = self.last_diag()
        bad = len(self.expected["good"]) - len(good)
        self.assertEqual(int(values["frames_rejected"]), bad, values.get("rejected_kinds"))
        expected_kinds = ",".join("%s=%d" % kv for kv in sorted(Counter(self.expected["bad_kinds"]).items()))
        self.assertEqual(values["rejected_kinds"], expected_kinds)
        self.assertEqual(int(values["frames_dropped"]), 0)
        self.assertEqual(int(values["frames_in"]), len(self.expected["stamps_ns"]))
        levels = [s.level for s in _statuses]
        self.assertIn(1, levels, "bad input never raised a WARN")
        w, h = self.expected["width"], self.expected["height"]
        self.assertEqual({(m.width, m.height) for _t, m in self.got["depth"]}, {(w, h)},
                         "a frame with an EXIF orientation lost the sensor's geometry")

    def check_robust(self, depth_keys):
        statuses, values = self.last_diag()
        frames_in, out = int(values["frames_in"]), int(values["frames_out"])
        errors, dropped = int(values["inference_errors"]), int(values["frames_dropped"])
        self.assertEqual(frames_in, len(self.expected["stamps_ns"]))
        self.assertEqual(int(values["frames_rejected"]), 0, "a camera_info problem counted as a rejected frame")
        idle = int(values["frames_idle"])  # before this checker's subscriptions were connected
        self.assertEqual(out + dropped + errors + int(values["frames_paused"]) + int(values["frames_throttled"])
                         + idle, frames_in, values)
        self.assertEqual(out, len(depth_keys))
        processed = frames_in - dropped - idle  # warm-up = inference call 1, then one call per processed frame
        self.assertEqual(errors, (processed + 1) // self.expected["fail_every"], values)
        self.assertIn("injected failure", values["last_error"])
        self.assertIn(2, [st.level for st in statuses], "inference failures never raised an ERROR")
        self.assertEqual(depth_keys[-1], self.camera_keys()[-1], "the stream stopped after a failure")
        self.assertEqual(self.got["info"], [], "a camera_info of another size was passed through")
        self.assertEqual(int(values["camera_info_mismatches"]), out)

    def check_backlog(self, depth_keys):
        _statuses, values = self.last_diag()
        frames_in, dropped = int(values["frames_in"]), int(values["frames_dropped"])
        # every frame is either seen or missed upstream (header.seq gap, e.g. rospy's own queue_size=1)
        self.assertEqual(frames_in + int(values["frames_missed"]), len(self.expected["stamps_ns"]))
        self.assertGreater(dropped, 0, "the camera was faster than the model, yet nothing was dropped")
        self.assertEqual(int(values["frames_out"]) + dropped + int(values["frames_rejected"])
                         + int(values["inference_errors"]) + int(values["frames_paused"])
                         + int(values["frames_throttled"]) + int(values["frames_idle"]), frames_in)
        infer_s = float(values["inference_ms_p95"]) / 1000.0
        ages = [t - m.header.stamp.to_sec() for t, m in self.got["depth"]]
        bound = 3.0 * infer_s + 1.0
        rospy.loginfo("backlog check: %d depth of %d frames, %d dropped, age max %.2f s (bound %.2f s)",
                      len(ages), frames_in, dropped, max(ages), bound)
        self.assertLess(max(ages), bound, "depth lags the camera by %.2f s: a backlog" % max(ages))


if __name__ == "__main__":
    rostest.rosrun("depth_estimation", "check_depth_output", DepthOutputCheck)
