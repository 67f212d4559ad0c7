#!/usr/bin/env python3
"""rostest checker for ``~virtual_stop_line`` (virtual_stop_line.test): on a simulated drive up to an
obstacle, every reading pairs (by stamp) with the simulator's ground truth ``/<veh>/obstacle_gt``;
where an obstacle is in the corridor it is detected at its distance (within 10 %), where none is, none
is reported, and ``at_stop_line`` is true exactly below the offset; the drive crosses the offset, so
both answers occur."""
import math
import threading
import time
import unittest

import rospy
import rostest
from duckietown_msgs.msg import StopLineReading
from sensor_msgs.msg import Range


class StopLineCheck(unittest.TestCase):
    def setUp(self):
        rospy.init_node("check_stop_line")
        veh = rospy.get_param("~veh")
        self.frames, self.offset = int(rospy.get_param("~frames")), float(rospy.get_param("~offset"))
        self.lock, self.truth, self.readings = threading.Lock(), {}, {}
        self.subs = [rospy.Subscriber("/%s/depth_node/virtual_stop_line" % veh, StopLineReading, self.store,
                                      callback_args=self.readings, queue_size=100),
                     rospy.Subscriber("/%s/obstacle_gt" % veh, Range, self.store, callback_args=self.truth,
                                      queue_size=100)]

    def store(self, msg, into):
        with self.lock:
            into[msg.header.stamp.to_nsec()] = msg

    def wait_for_end(self):
        deadline = time.time() + 180.0
        while len(self.truth) < self.frames:
            self.assertLess(time.time(), deadline, "the bag's %d frames never all arrived" % self.frames)
            time.sleep(0.1)
        count, quiet_since = -1, time.time()  # then the node's last outputs: until none came for 3 s
        while time.time() - quiet_since < 3.0 and time.time() < deadline:
            with self.lock:
                if len(self.readings) != count:
                    count, quiet_since = len(self.readings), time.time()
            time.sleep(0.1)

    def test_stop_line_follows_the_ground_truth(self):
        self.wait_for_end()
        with self.lock:
            readings, truth = dict(self.readings), dict(self.truth)
        self.assertGreaterEqual(len(readings), self.frames // 2, "too few readings: %d" % len(readings))
        at, before, wrong = 0, 0, []
        for stamp, msg in sorted(readings.items()):
            self.assertIn(stamp, truth, "a reading with a stamp of no frame")
            self.assertEqual(msg.header.frame_id, "simbot/footprint")
            gt, x = truth[stamp].range, msg.stop_line_point.x
            where = "%.2f s: truth %.3f m, detected %s at %.3f m, at_stop_line %s" % (
                stamp / 1e9, gt, msg.stop_line_detected, x, msg.at_stop_line)
            if not math.isfinite(gt):
                wrong += [where] if msg.stop_line_detected else []
                continue
            ok = msg.stop_line_detected and abs(x - gt) <= 0.1 * gt and msg.at_stop_line == (x < self.offset)
            if abs(gt - self.offset) > 0.1 * gt:  # the truth's side of the offset, where 10 % cannot cross it
                ok = ok and msg.at_stop_line == (gt < self.offset)
            wrong += [] if ok else [where]
            at, before = at + msg.at_stop_line, before + (not msg.at_stop_line)
        self.assertFalse(wrong, "%d of %d readings wrong:\n%s" % (len(wrong), len(readings), "\n".join(wrong)))
        self.assertTrue(at >= 2 and before >= 2, "the drive should cross the offset: %d at, %d before" % (at, before))

if __name__ == "__main__":
    rostest.rosrun("depth_estimation", "check_stop_line", StopLineCheck)
