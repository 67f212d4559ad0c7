#!/usr/bin/env python3
"""rostest checker for the Duckietown controls of depth_node while a 30 Hz camera bag plays (``~mode``):

``switch``: ``~switch`` false at 2 s stops depth output within one frame (diagnostics say paused,
frames counted as ``frames_paused``), true at 3.5 s resumes it with the next frames;
``throttle``: with ``~process_frequency: 2`` two depth frames are never closer than 0.5 s of camera
time and the skipped frames are counted as ``frames_throttled``;
``params``: the robot's own file (``test/robot_config/testbot.yaml``: colormap turbo, and a model
and input size that the launch arguments override) is in effect from the first frame, and
``rosparam set ~colormap jet`` at 2.5 s recolours the frames from then on, without a restart.
Every mode checks the exact frame accounting.
"""
import threading
import time

import numpy as np
import rospy
import rostest
from std_srvs.srv import SetBool

from check_depth_output import DepthOutputCheck, key
from depth_estimation.framepath.colorize import Colorizer

COUNTS = ("frames_out", "frames_dropped", "frames_rejected", "inference_errors", "frames_paused",
          "frames_throttled", "frames_idle")


class NodeControlCheck(DepthOutputCheck):
    def setUp(self):
        super().setUp()
        self.node = "/%s/depth_node" % rospy.get_param("~veh")
        self.events = {}

    def plan(self):
        """[(seconds after the first camera frame, event name, action)] for this mode."""
        if self.mode == "switch":
            return [(2.0, "off", lambda: self.switch(False)), (3.5, "on", lambda: self.switch(True))]
        if self.mode == "params":
            return [(2.5, "recolour", lambda: rospy.set_param(self.node + "/colormap", "jet"))]
        return []

    def switch(self, on):
        rospy.wait_for_service(self.node + "/switch", timeout=10.0)
        reply = rospy.ServiceProxy(self.node + "/switch", SetBool)(on)
        self.assertTrue(reply.success, reply.message)

    def wait_for_end(self):
        start = self.expected["stamps_ns"][0] / 1e9
        plan, deadline = sorted(self.plan(), key=lambda p: p[0]), time.time() + 150.0
        while plan and time.time() < deadline:
            offset, name, action = plan[0]
            if rospy.get_time() >= start + offset:
                before = rospy.get_time()
                action()
                self.events[name] = (before, rospy.get_time())
                plan.pop(0)
            time.sleep(0.005)
        self.assertFalse(plan, "the stream never reached the planned actions")
        super().wait_for_end()

    def accounting(self):
        statuses, values = self.last_diag()
        frames_in = int(values["frames_in"])
        self.assertEqual(frames_in + int(values["frames_missed"]), len(self.expected["stamps_ns"]), values)
        self.assertEqual(sum(int(values[name]) for name in COUNTS), frames_in, values)
        return statuses, values

    def check_switch(self, depth_keys):
        off_asked, off_done = self.events["off"]
        on_asked, on_done = self.events["on"]
        while_off = [(t, m) for t, m in self.got["depth"] if off_done < t < on_asked]
        # Arriving while off: only frames captured before the call, still in transit (outputs go out with
        # queue_size=1, but a reader slower than the node has a few in its socket), none a second later.
        for _t, m in while_off:
            self.assertLess(m.header.stamp.to_sec(), off_done, "a frame captured after ~switch false came out")
        late = [t - off_done for t, _m in while_off if t > off_done + 1.0]
        self.assertFalse(late, "depth kept coming after ~switch false (%s s after)" % late)
        after_on = [m.header.stamp.to_sec() for t, m in self.got["depth"] if t > on_done]
        self.assertTrue(after_on, "no depth after ~switch true")
        self.assertGreaterEqual(after_on[0], on_asked - 0.1, "an old frame was processed after resuming")
        self.assertLess(after_on[0], on_done + 1.0, "depth did not resume with the next frames")
        statuses, values = self.accounting()
        self.assertGreater(int(values["frames_paused"]), 10, values)
        self.assertEqual(values["paused"], "false")
        paused = [s for s in statuses if any(kv.key == "paused" and kv.value == "true" for kv in s.values)]
        self.assertTrue(paused and all("paused" in s.message for s in paused), "diagnostics never said paused")
        before_off = [t for t, _m in self.got["depth"] if t < off_asked]
        self.assertGreaterEqual(len(before_off), 3, "too little depth before the switch")

    def check_throttle(self, depth_keys):
        stamps = [m.header.stamp.to_sec() for _t, m in self.got["depth"]]
        gaps = np.diff(stamps)
        rospy.loginfo("throttle check: %d depth frames, smallest gap %.3f s", len(stamps), gaps.min())
        self.assertGreaterEqual(gaps.min(), 0.5 - 1e-6, "two depth frames closer than 1 / process_frequency")
        span = (self.expected["stamps_ns"][-1] - self.expected["stamps_ns"][0]) / 1e9
        self.assertLessEqual(len(stamps), int(span * 2.0) + 1)
        _statuses, values = self.accounting()
        self.assertGreater(int(values["frames_throttled"]), len(stamps), values)
        self.assertEqual(values["process_frequency"], "2")

    def colormap_of(self, color_msg, depth_by_key):
        depth_msg = depth_by_key[key(color_msg.header)]
        depth = np.frombuffer(depth_msg.data, np.float32).reshape(depth_msg.height, depth_msg.width)
        got = np.frombuffer(color_msg.data, np.uint8).reshape(color_msg.height, color_msg.width, 3)
        matches = [name for name in ("inferno", "turbo", "jet")
                   if np.mean(np.any(Colorizer(colormap=name)(depth) != got, axis=2)) < 0.001]
        return matches[0] if matches else "other"

    def check_params(self, depth_keys):
        depth_by_key = {key(m.header): m for _t, m in self.got["depth"]}
        asked, done = self.events["recolour"]
        # colour images whose depth twin reached this checker (outputs go out with queue_size=1: a slow
        # reader loses messages of each topic independently)
        maps = [(t, self.colormap_of(m, depth_by_key)) for t, m in self.got["color"]
                if key(m.header) in depth_by_key]
        before = [name for t, name in maps if t < asked]
        after = [name for t, name in maps if t > done + 1.5]  # read again within 0.5 s, then one frame
        rospy.loginfo("params check: colormaps before %s, after %s", sorted(set(before)), sorted(set(after)))
        self.assertTrue(before and set(before) == {"turbo"}, "the robot file's colormap was not used: %s" % before)
        self.assertTrue(after and set(after) == {"jet"}, "the run-time colormap was not applied: %s" % after)
        _statuses, values = self.accounting()
        self.assertEqual(values["input_size"], "140", "the launch argument must win over the robot file")
        self.assertNotIn("random", values["model"], "the launch argument must win over the robot file")
        self.assertEqual(rospy.get_param(self.node + "/jpeg_quality"), 60)


if __name__ == "__main__":
    rostest.rosrun("depth_estimation", "check_node_control", NodeControlCheck)
