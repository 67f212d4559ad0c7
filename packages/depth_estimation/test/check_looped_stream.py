#!/usr/bin/env python3
"""rostest checker for a looped camera bag (test/looped_stream.test): the camera's header.seq
restarting marks each loop. Over a whole later loop every depth frame has its camera_info and its
metres (stamps that repeat, go back or are 0 pair by arrival), diagnostics keep coming after ROS
time jumped back, and a run-time parameter set after the jump is applied. Wall-clock arrival times
(``time.time``) place the messages in the loops, whatever ROS time does."""
import threading
import time
import unittest

import rospy
import rostest
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Empty

LOOPS = 2  # loop boundaries to wait for: the whole loop between them is checked


class LoopedStreamCheck(unittest.TestCase):
    def setUp(self):
        rospy.init_node("check_looped_stream")
        veh = rospy.get_param("~veh")
        self.ns = "/%s/depth_node/" % veh
        self.lock = threading.Lock()
        self.got = {name: [] for name in ("depth", "info", "metric", "diag")}
        self.boundaries, self.last_seq = [], None
        topics = (("depth/image_raw", Image, "depth"), ("depth/camera_info", CameraInfo, "info"),
                  ("depth/metric", Image, "metric"))
        self.subs = [rospy.Subscriber(self.ns + topic, cls, self.store, callback_args=name, queue_size=100,
                                      buff_size=2 ** 26) for topic, cls, name in topics]
        self.subs.append(rospy.Subscriber("/diagnostics", DiagnosticArray, self.store, callback_args="diag"))
        self.subs.append(rospy.Subscriber("/%s/camera_node/image/compressed" % veh, CompressedImage, self.camera,
                                          queue_size=100, buff_size=2 ** 24))
        self.subs.append(rospy.Subscriber("/stream_end", Empty, lambda _m: None))  # rosbag waits for it

    def store(self, msg, name):
        with self.lock:
            self.got[name].append((time.time(), msg))

    def camera(self, msg):
        with self.lock:
            if self.last_seq is not None and msg.header.seq < self.last_seq:
                self.boundaries.append(time.time())
            self.last_seq = msg.header.seq

    def wait_for_loops(self, count, deadline):
        while True:
            with self.lock:
                if len(self.boundaries) >= count:
                    return list(self.boundaries)
            self.assertLess(time.time(), deadline, "the bag did not loop %d time(s)" % count)
            time.sleep(0.1)

    def test_every_loop_keeps_its_outputs_and_the_timers_go_on(self):
        deadline = time.time() + 180.0
        first = self.wait_for_loops(1, deadline)[0]
        rospy.set_param(self.ns + "process_frequency", 50.0)  # after the jump: applied only if polled
        start, end = self.wait_for_loops(LOOPS, deadline)[:2]
        time.sleep(1.5)  # the last frames of the loop leave the node
        with self.lock:
            got = {name: [m for t, m in msgs if start + 0.5 < t <= end + 0.5] for name, msgs in self.got.items()}
            diags = [m for t, m in self.got["diag"] if t > first + 2.0]
        n_depth, n_info, n_metric = len(got["depth"]), len(got["info"]), len(got["metric"])
        counts = "depth %d, camera_info %d, metric %d in the loop" % (n_depth, n_info, n_metric)
        self.assertGreaterEqual(n_depth, 5, counts)  # of 80 frames at 8 Hz: a busy machine drops many
        self.assertGreaterEqual(n_info, n_depth - 1, counts)
        self.assertGreaterEqual(n_metric, n_depth - 3, counts)
        self.assertGreaterEqual(len(got["diag"]), 3, "diagnostics stopped after ROS time went back")
        values = [{kv.key: kv.value for kv in s.values} for arr in diags for s in arr.status
                  if "depth_node" in s.name]
        self.assertTrue(values, "no diagnostics after the first loop")
        self.assertEqual(values[-1]["process_frequency"], "50", "a parameter set after the jump was not applied")
        self.assertEqual(values[-1]["camera_info_unpaired"], "0", values[-1])
        self.assertEqual(values[-1]["metric_state"], "OK", values[-1])


if __name__ == "__main__":
    rostest.rosrun("depth_estimation", "looped_stream", LoopedStreamCheck)
