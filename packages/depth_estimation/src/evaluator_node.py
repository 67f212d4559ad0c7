#!/usr/bin/env python3
"""evaluator_node: scores depth_node's output against a bag's ground truth, frame by frame.

Pairs ``~prediction`` (depth_node's 32FC1 relative inverse depth) with ``~ground_truth``
(32FC1 metres, or 16UC1 millimetres) by header stamp, scores each pair with the library's
metrics (the same code as ``depth-eval``), and when the bag's last ground-truth frame has been
answered (or nothing arrived for ``~idle_timeout`` wall seconds) writes JSON and CSV atomically
and shuts down. Ctrl-C writes what was scored so far, marked partial.

``~crop`` ``auto`` reads the dataset the bag records (``/<ns>/dataset``, written by the
converters) straight from ``~bag``; the node also listens on ``~dataset`` (remapped to
``/<ns>/dataset``), so that ``rosbag play --wait-for-subscribers`` finds a subscriber for every
topic of the bag. Prediction pixels without a value (NaN, inf) are left out of the alignment
and the metrics and counted (``invalid_prediction_pixels``); a frame whose prediction has no value
at all is skipped and listed (``all_invalid_prediction_frames``).

With ``~obstacles`` (``evaluate.launch metric:=true``, on a bag with obstacle ground truth from
depth-sim2bag) it also scores the node's metric outputs: ``~metric_prediction`` (``~depth/metric``)
on the bag's obstacle pixels and ``~obstacle_distance`` against the bag's ``/<ns>/obstacle_gt``
(``obstacles`` in the JSON; depth_estimation.evaluation.obstacle_eval; ``frames_without_output``: frames
with depth but no metric output, the node's state NONE). It always listens on
``~obstacle_gt`` and ``~obstacle_mask`` (remapped to the bag's), for ``--wait-for-subscribers``.
"""
import sys
import threading
import time

import rosbag
import rospy
from sensor_msgs.msg import Image, Range
from std_msgs.msg import String

from depth_estimation.evaluation import metrics, obstacle_eval
from depth_estimation.evaluation.scoring import ALL_INVALID, ScoreOptions, score_frame, write_csv
from depth_estimation.io.atomic import write_json
from depth_estimation.io.rgbd import bag_dataset, depth_from_msg, stamp_ns


class Evaluator:
    def __init__(self):
        get = rospy.get_param
        self.align, self.crop = get("~align", "lsq-disparity"), get("~crop", "auto")
        self.min_depth, self.max_depth = float(get("~min_depth", 1e-3)), float(get("~max_depth", 10.0))
        ScoreOptions(self.align, self.crop, "", self.min_depth, self.max_depth)  # bad values: fail at start
        self.json, self.csv = get("~json"), get("~csv", "")
        self.model, self.idle_timeout = get("~model", ""), float(get("~idle_timeout", 15.0))
        bag, self.gt_topic = get("~bag"), rospy.resolve_name("~ground_truth")
        bag_gt_topic = get("~bag_depth_topic", self.gt_topic)
        with rosbag.Bag(bag) as recording:
            self.expected = recording.get_message_count(topic_filters=[bag_gt_topic])
        self.dataset = bag_dataset(bag, bag_gt_topic)
        self.preds, self.gts, self.per_frame, self.skipped, self.crops = {}, {}, [], [], set()
        self.scored_stamps = set()
        self.lock, self.last_message, self.done = threading.Lock(), time.time(), False
        rospy.Subscriber("~prediction", Image, self.on_prediction, queue_size=10, buff_size=2 ** 26)
        rospy.Subscriber("~ground_truth", Image, self.on_ground_truth, queue_size=10, buff_size=2 ** 26)
        rospy.Subscriber("~dataset", String, self.on_dataset, queue_size=1)
        self.obstacles = None
        if get("~obstacles", False):
            truth = obstacle_eval.ObstacleTruth.from_bag(bag, bag_gt_topic)
            if truth is None:
                rospy.logwarn("evaluator: ~obstacles is set but %s has no obstacle ground truth", bag)
            else:
                self.obstacles = obstacle_eval.StreamScorer(truth, (self.min_depth, self.max_depth))
                rospy.Subscriber("~metric_prediction", Image, self.on_metric, queue_size=10,
                                 buff_size=2 ** 26)
                rospy.Subscriber("~obstacle_distance", Range, self.on_distance, queue_size=10)
        # the bag's obstacle ground truth is read from the file; listened to for --wait-for-subscribers
        rospy.Subscriber("~obstacle_gt", Range, lambda _msg: None, queue_size=1)
        rospy.Subscriber("~obstacle_mask", Image, lambda _msg: None, queue_size=1)
        rospy.on_shutdown(lambda: self.finish(partial=True))
        rospy.loginfo("evaluator: %d ground-truth frames expected on %s (dataset %s)", self.expected,
                      self.gt_topic, self.dataset)

    def on_prediction(self, msg):
        try:  # step, endianness and encoding as the message says (one decoder with depth-eval's)
            pred = depth_from_msg(msg, what="prediction", millimetres=False)
        except ValueError as exc:
            rospy.logwarn("evaluator: prediction at %d ns skipped: %s", stamp_ns(msg), exc)
            return
        self.add(self.preds, stamp_ns(msg), pred)

    def on_ground_truth(self, msg):
        gt = depth_from_msg(msg)
        if self.obstacles is not None:
            with self.lock:
                self.obstacles.ground_truth(stamp_ns(msg), gt)
        self.add(self.gts, stamp_ns(msg), gt)

    def on_metric(self, msg):
        depth = depth_from_msg(msg, what="metric depth", millimetres=False)  # step and endianness honoured
        with self.lock:
            self.obstacles.metric_depth(stamp_ns(msg), depth)

    def on_distance(self, msg):
        with self.lock:
            self.obstacles.distance(stamp_ns(msg), float(msg.range))

    def on_dataset(self, msg):
        with self.lock:
            if self.dataset is None:  # ~bag has no record (another file than the one played?)
                self.dataset = str(msg.data)
            elif self.dataset != msg.data:
                rospy.logwarn("evaluator: the bag file records dataset %s, the replay says %s; using %s",
                              self.dataset, msg.data, self.dataset)

    def add(self, table, stamp, array):
        with self.lock:
            self.last_message = time.time()
            table[stamp] = array
            for s in [s for s in self.preds if s in self.gts]:
                self.score(s, self.preds.pop(s), self.gts.pop(s))

    def score(self, stamp, pred, gt):
        index = len(self.per_frame) + len(self.skipped)
        try:
            record, crop, ok = score_frame(index, stamp, pred, gt, "disparity", ScoreOptions(
                self.align, self.crop, self.gt_topic, self.min_depth, self.max_depth, self.dataset))
        except ValueError as exc:  # a frame that cannot be scored is reported, not left unanswered
            record, crop, ok = {"index": index, "stamp": stamp / 1e9, "stamp_ns": stamp}, "", False
            record["skipped"] = str(exc)
        if crop:
            self.crops.add(crop)
        if not ok:
            rospy.logwarn("evaluator: frame %d (stamp %d): %s; skipped", index, stamp, record["skipped"])
        (self.per_frame if ok else self.skipped).append(record)
        self.scored_stamps.add(stamp)

    def run(self):
        # wall-clock polling: sim time stops with the bag
        while not rospy.is_shutdown() and not self.done:
            with self.lock:
                answered = len(self.scored_stamps) + len(self.gts)
                idle = time.time() - self.last_message
            if (answered >= self.expected and not self.gts) or idle > self.idle_timeout:
                self.finish(partial=False)
                rospy.signal_shutdown("evaluation finished")
            time.sleep(0.2)

    def finish(self, partial):
        with self.lock:
            if self.done:
                return
            self.done = True
            result = self.result(partial)
        write_json(self.json, result)
        if self.csv and self.per_frame:
            write_csv(self.csv, result)
        rospy.loginfo("evaluator: %d frames scored (%d expected)%s; abs_rel %s delta1 %s; %d invalid "
                      "prediction pixels -> %s", result["frames"], self.expected,
                      " PARTIAL" if partial else "", result["metrics"].get("abs_rel"),
                      result["metrics"].get("delta1"), result["invalid_prediction_pixels"], self.json)

    def result(self, partial):
        crop = self.crop if self.crop != "auto" else "auto:" + ",".join(sorted(self.crops))
        answered = len(self.scored_stamps)
        extra = {"obstacles": self.obstacles.summary(answered)} if self.obstacles is not None else {}
        return dict(extra, **{
            "metrics": metrics.mean_metrics(self.per_frame) if self.per_frame else {},
            "frames": len(self.per_frame), "per_frame": self.per_frame, "skipped": self.skipped,
            "align": self.align, "crop": crop, "dataset": self.dataset,
            "model": self.model, "expected_frames": self.expected, "partial": partial,
            # left out of the alignment and the metrics of the scored frames
            "invalid_prediction_pixels": sum(r["invalid_prediction_pixels"] for r in self.per_frame),
            "all_invalid_prediction_frames": [r["index"] for r in self.skipped
                                              if r["skipped"] == ALL_INVALID],
            # published by depth_node but never scored (no ground truth with that stamp)
            "unscored_predictions": sorted(self.preds),
            # ground truth that never got a prediction (dropped by a node slower than the bag)
            "unanswered_ground_truth": self.expected - len(self.scored_stamps),
        })


def main():
    rospy.init_node("evaluator")
    try:
        evaluator = Evaluator()
    except ValueError as exc:  # a bad parameter: one line, not a traceback
        rospy.logfatal("evaluator: %s", exc)
        sys.exit(2)
    evaluator.run()


if __name__ == "__main__":
    main()
