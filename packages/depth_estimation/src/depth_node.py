#!/usr/bin/env python3
"""depth_node: camera CompressedImage -> depth (32FC1), colorized depth and diagnostics.

A thin ROS wrapper: all the work is in the ROS-free ``depth_estimation`` library. The
subscriber callback only hands the newest frame to a worker thread (frames the worker has
not taken are dropped and counted), so a slow model never builds a backlog.

Start-up checks every parameter, loads the model and runs it once on a blank frame of
``expected_frame_size``: any problem is one FATAL line per cause and a non-zero exit. While
running, a frame that fails is counted (``inference_errors``, ERROR in diagnostics) and the next
one is processed. A restarted ROS master (its registrations and parameters are gone) makes the
node exit with code 3 so that its launcher restarts it; SIGINT exits 0 within a second or two,
even in the middle of a long inference.
"""
import copy
import logging
import os
import sys
import threading
import time

import numpy as np
import rosgraph
import rospy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from depth_estimation.framepath.frames import RejectedFrame
from depth_estimation.framepath.health import NodeHealth
from depth_estimation.framepath.params import CHECKS, ParameterError, check_params
from depth_estimation.framepath.pipeline import CameraInfoPairing, camera_info_problem, pipeline_from_params
from depth_estimation.framepath.slot import LatestSlot
from depth_estimation.models.specs import ModelNotFound

BUFF_SIZE = 2 ** 24  # rospy reads whole messages only if its buffer holds one (a 1280x720 JPEG is ~0.5 MB)
WARN_EVERY = 30.0  # seconds between repeated warnings of one kind
EXIT_MASTER_RESTARTED = 3


def one_line(exc):
    return "%s: %s" % (type(exc).__name__, " ".join(str(exc).split())[:400])


def header_like(header):
    """A header of its own for each published message (rospy writes ``seq`` into the one it sends)."""
    return Header(stamp=header.stamp, frame_id=header.frame_id)


def to_image(header, array, encoding):
    msg = Image(header=header_like(header), height=array.shape[0], width=array.shape[1], encoding=encoding,
                is_bigendian=0)
    msg.step = array.strides[0]
    msg.data = array.tobytes()
    return msg


class DepthNode:
    def __init__(self):
        raw = {name: rospy.get_param("~" + name) for name in CHECKS if rospy.has_param("~" + name)}
        self.params = check_params(raw)  # ParameterError names every bad parameter
        self.pipeline = pipeline_from_params(self.params)
        estimator = self.pipeline.estimator.load()
        width, height = self.params["expected_frame_size"]
        estimator.infer(np.zeros((int(height), int(width), 3), np.uint8))  # backend ready, or fail now
        self.health = NodeHealth(estimator.timer, {
            "model": estimator.name, "backend": estimator.backend, "device": estimator.device,
            "input_size": str(estimator.input_size),
            "weights": "RANDOM (untrained)" if estimator.spec.untrained else "trained"},
            stall_after=float(self.params["stall_after"]))
        self.slot = LatestSlot()
        self.camera_infos = CameraInfoPairing()
        self.warned = {}
        self.exit_code = 0
        self._advertise()
        self.worker = threading.Thread(target=self.run, name="depth_worker", daemon=True)
        self.worker.start()
        rospy.Timer(rospy.Duration(float(self.params["diagnostics_period"])), self.publish_diagnostics)
        threading.Thread(target=self.watch_master, name="master_watch", daemon=True).start()
        rospy.on_shutdown(self.slot.close)
        rospy.loginfo("depth_node: %s on %s (%s), input short side %d; listening on %s",
                      estimator.name, estimator.device, estimator.backend, estimator.input_size,
                      rospy.resolve_name("~image/compressed"))

    def _advertise(self):
        self.pub_depth = rospy.Publisher("~depth/image_raw", Image, queue_size=1)
        self.pub_color = rospy.Publisher("~depth/colorized", Image, queue_size=1)
        self.pub_jpeg = rospy.Publisher("~depth/colorized/compressed", CompressedImage, queue_size=1)
        self.pub_info = rospy.Publisher("~depth/camera_info", CameraInfo, queue_size=1)
        self.pub_diag = rospy.Publisher("/diagnostics", DiagnosticArray, queue_size=1)
        rospy.Subscriber("~camera_info", CameraInfo, self.on_camera_info, queue_size=10)
        rospy.Subscriber("~image/compressed", CompressedImage, self.on_image, queue_size=1,
                         buff_size=BUFF_SIZE)

    def on_camera_info(self, msg):
        self.camera_infos.store(msg.header.stamp.to_nsec(), msg)

    def on_image(self, msg):
        self.health.frame_in(rospy.get_time(), self.slot.put(msg), msg.header.seq)

    def run(self):
        while not rospy.is_shutdown():
            msg = self.slot.take(timeout=0.5)
            if msg is None:
                continue
            try:
                self.process(msg)
            except RejectedFrame as exc:
                self.health.frame_rejected(exc.kind)
                self.warn(exc.kind, "dropped a bad input frame (%s); %d rejected so far",
                          exc, self.health.frames_rejected)
            except Exception as exc:  # noqa: BLE001 - one bad frame must not stop the stream
                if rospy.is_shutdown():
                    break
                self.health.inference_error(one_line(exc))
                rospy.logerr_throttle(WARN_EVERY, "depth_node: processing a frame failed (%s); %d failures "
                                      "so far, going on with the next frame"
                                      % (one_line(exc), self.health.inference_errors))

    def process(self, msg):
        want_color = self.pub_color.get_num_connections() > 0
        want_jpeg = self.pub_jpeg.get_num_connections() > 0
        result = self.pipeline.process(msg.data, msg.format, colorized=want_color, jpeg=want_jpeg)
        height, width = result.depth.shape
        self.pub_depth.publish(to_image(msg.header, result.depth, "32FC1"))
        if want_color:
            self.pub_color.publish(to_image(msg.header, result.colorized, "bgr8"))
        if want_jpeg:
            self.pub_jpeg.publish(CompressedImage(header=header_like(msg.header), data=result.colorized_jpeg,
                                                  format="bgr8; jpeg compressed bgr8"))
        self.publish_camera_info(msg.header, height, width)
        self.health.frame_out(rospy.get_time(), msg.header.stamp.to_sec())

    def publish_camera_info(self, header, height, width):
        info = self.camera_infos.find(header.stamp.to_nsec())
        if info is None:
            return
        problem = camera_info_problem(info, height, width)
        if problem:
            self.health.camera_info_mismatch(problem)
            self.warn("camera_info", "%s: depth is published without camera_info", problem)
            return
        info_out = copy.copy(info)  # the stored message keeps its own header
        info_out.header = header_like(header)
        self.pub_info.publish(info_out)

    def warn(self, kind, text, *args):
        now = rospy.get_time()
        if now - self.warned.get(kind, -1e9) >= WARN_EVERY:  # once per kind, then every 30 s at most
            self.warned[kind] = now
            rospy.logwarn("depth_node: " + text, *args)

    def publish_diagnostics(self, _event=None):
        level, message, values = self.health.report(rospy.get_time())
        status = DiagnosticStatus(level=level, name="%s: depth estimation" % rospy.get_name(),
                                  message=message, hardware_id=self.health.info["device"],
                                  values=[KeyValue(k, v) for k, v in sorted(values.items())])
        self.pub_diag.publish(DiagnosticArray(header=rospy.Header(stamp=rospy.Time.now()), status=[status]))

    def watch_master(self):
        """Exit (code 3) when the ROS master restarts: this node's registrations are gone with it."""
        master, first_pid, unreachable = rosgraph.Master(rospy.get_name()), None, False
        while not rospy.is_shutdown():
            try:
                pid = master.getPid()
            except Exception:  # noqa: BLE001 - down or unreachable: keep asking
                if not unreachable:
                    rospy.logwarn("depth_node: the ROS master at %s is unreachable",
                                  rosgraph.get_master_uri())
                unreachable = True
                time.sleep(1.0)
                continue
            unreachable = False
            first_pid = pid if first_pid is None else first_pid
            if pid != first_pid:
                rospy.logfatal("depth_node: the ROS master at %s restarted (pid %d, was %d); its "
                               "registrations and parameters are gone, exiting so that the launcher "
                               "restarts this node", rosgraph.get_master_uri(), pid, first_pid)
                self.exit_code = EXIT_MASTER_RESTARTED
                rospy.signal_shutdown("ROS master restarted")
                return
            time.sleep(1.0)


def exit_now(code):
    """Leave at once: no C++ destructors racing a worker thread still inside the model (an inference
    in flight at SIGINT would otherwise abort the process with 'terminate called ...')."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def start():
    try:
        return DepthNode()
    except ParameterError as exc:
        for problem in exc.problems:
            rospy.logfatal("depth_node: %s", problem)
        exit_now(2)
    except ModelNotFound as exc:
        rospy.logfatal("depth_node: %s", exc)
        exit_now(1)
    except Exception as exc:  # noqa: BLE001 - backend, device or model failures: one line, non-zero exit
        rospy.logfatal("depth_node: cannot start: %s", one_line(exc))
        exit_now(1)


def main():
    rospy.init_node("depth_node")
    node = start()
    rospy.spin()
    node.worker.join(timeout=1.0)
    exit_now(node.exit_code)


if __name__ == "__main__":
    main()
