#!/usr/bin/env python3
"""rostest checker for evaluate.launch: waits for the evaluator's JSON (written when the bag's last
frame is scored) and checks it."""
import json
import os
import time
import unittest

import rospy
import rostest

METRICS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "delta1", "delta2", "delta3")


class EvaluationCheck(unittest.TestCase):
    def test_evaluation_json(self):
        rospy.init_node("check_evaluation")
        path, frames = rospy.get_param("~json"), int(rospy.get_param("~frames"))
        started, deadline = time.time(), time.time() + 150
        while not (os.path.exists(path) and os.path.getmtime(path) >= started - 1):
            self.assertLess(time.time(), deadline, "the evaluator never wrote %s" % path)
            time.sleep(0.2)
        with open(path) as f:
            result = json.load(f)
        self.assertFalse(result["partial"])
        self.assertEqual(result["frames"], frames)
        self.assertEqual(result["expected_frames"], frames)
        self.assertEqual(result["unanswered_ground_truth"], 0)
        self.assertEqual(len(result["per_frame"]), frames)
        self.assertEqual(sorted(result["metrics"]), sorted(METRICS))
        self.assertTrue(0.0 <= result["metrics"]["delta1"] <= 1.0 and result["metrics"]["abs_rel"] > 0)
        # the node publishes finite depth: no prediction pixel is left out, every frame counts them
        self.assertEqual(result["invalid_prediction_pixels"], 0)
        self.assertEqual(result["all_invalid_prediction_frames"], [])
        self.assertEqual([f["invalid_prediction_pixels"] for f in result["per_frame"]], [0] * frames)
        # the converters record the dataset in the bag; --crop auto follows it
        self.assertIn(result["dataset"], ("nyu", "rgbd"))
        self.assertEqual(result["crop"], "auto:eigen" if result["dataset"] == "nyu" else "auto:none")


if __name__ == "__main__":
    rostest.rosrun("depth_estimation", "check_evaluation", EvaluationCheck)
