#!/usr/bin/env python3
"""rostest checker for ``metric: true``: while a real floor frame streams with its camera_info, the
node publishes metric depth (32FC1 metres, the camera's header, its camera_info alongside), a laser
scan and the obstacle distance in the ground frame with the camera's stamps, and its metres match the
scene's ground truth although the network's output is relative (test/oracle_depth: a perfect relative
model under an unknown scale and shift). The bag's sidecar (tests/depth_fixtures.py) has the stamps."""
import json
import math
import threading
import time
import unittest

import numpy as np
import rospy
import rostest
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CameraInfo, Image, LaserScan, PointCloud2, Range
from std_msgs.msg import Empty


class MetricOutputCheck(unittest.TestCase):
    def setUp(self):
        rospy.init_node("check_metric_output")
        with open(rospy.get_param("~expected")) as f:
            self.expected = json.load(f)
        veh = rospy.get_param("~veh")
        ns = "/%s/depth_node/" % veh
        self.ground_frame = "%s/footprint" % veh
        self.lock, self.ended = threading.Lock(), threading.Event()
        self.got = {name: [] for name in ("metric", "info", "scan", "range", "points", "diag")}
        topics = (("depth/metric", Image, "metric"), ("depth/metric/camera_info", CameraInfo, "info"),
                  ("scan", LaserScan, "scan"), ("obstacle_distance", Range, "range"), ("points", PointCloud2, "points"))
        self.subs = [rospy.Subscriber(ns + topic, cls, self.store, callback_args=name, queue_size=100,
                                      buff_size=2 ** 26) for topic, cls, name in topics]
        self.subs.append(rospy.Subscriber("/diagnostics", DiagnosticArray, self.store, callback_args="diag"))
        self.subs.append(rospy.Subscriber("/stream_end", Empty, lambda _m: self.ended.set()))

    def store(self, msg, name):
        with self.lock:
            self.got[name].append(msg)

    def wait_for_end(self):
        deadline = time.time() + 150.0
        while not self.ended.is_set():
            self.assertLess(time.time(), deadline, "the bag never reached /stream_end")
            time.sleep(0.1)
        tail_end = self.expected["stamps_ns"][-1] / 1e9 + 2.5
        while rospy.get_time() < tail_end and time.time() < deadline:
            time.sleep(0.1)

    def test_metric_outputs(self):
        self.wait_for_end()
        with self.lock:
            got = {k: list(v) for k, v in self.got.items()}
        stamps = set(self.expected["stamps_ns"])
        self.assertGreaterEqual(len(got["metric"]), len(stamps) // 2, "too few metric depth frames")
        truth = np.load(self.expected["depth"])
        errors = []
        for msg in got["metric"]:
            self.assertIn(msg.header.stamp.to_nsec(), stamps)
            self.assertEqual(msg.header.frame_id, self.expected["frame_id"])
            self.assertEqual((msg.encoding, msg.height, msg.width), ("32FC1", 480, 640))
            metres = np.frombuffer(msg.data, "<f4").reshape(480, 640)
            valid = np.isfinite(metres) & (truth > 0) & (truth < 5.0)
            self.assertGreater(valid.mean(), 0.3)
            errors.append(float(np.mean(np.abs(metres[valid] - truth[valid]) / truth[valid])))
        self.assertLessEqual(float(np.median(errors)), 0.05, "AbsRel of the metric depth: %s" % errors)
        infos = {m.header.stamp.to_nsec(): m for m in got["info"]}
        for msg in got["metric"]:
            info = infos.get(msg.header.stamp.to_nsec())
            self.assertIsNotNone(info, "no ~depth/metric/camera_info with the depth's stamp")
            self.assertEqual((info.header.frame_id, info.width, info.height), (msg.header.frame_id, 640, 480))
        self.check_scan_and_range(got, stamps)
        self.assertTrue(got["points"] and all(p.header.frame_id == self.expected["frame_id"] for p in got["points"]))
        values = {kv.key: kv.value for arr in got["diag"] for s in arr.status if "depth_node" in s.name
                  for kv in s.values}
        self.assertEqual(values.get("metric_state"), "OK")
        self.assertGreater(float(values["metric_inliers"]), 0.1)

    def check_scan_and_range(self, got, stamps):
        self.assertTrue(got["scan"] and got["range"], "no ~scan or ~obstacle_distance")
        for msg in got["scan"] + got["range"]:
            self.assertIn(msg.header.stamp.to_nsec(), stamps)
            self.assertEqual(msg.header.frame_id, self.ground_frame)
        scan = got["scan"][-1]
        self.assertEqual(len(scan.ranges), 91)
        ahead = np.asarray(scan.ranges)[40:51]  # the board stands straight ahead
        self.assertTrue(np.isfinite(ahead).all() and (ahead < scan.range_max).all(), list(ahead))
        distance = got["range"][-1].range
        self.assertTrue(0.0 < distance < got["range"][-1].max_range and not math.isinf(distance))
        self.assertLessEqual(distance, float(np.nanmin(np.asarray(scan.ranges))) + 0.05)


if __name__ == "__main__":
    rostest.rosrun("depth_estimation", "metric_output", MetricOutputCheck)
