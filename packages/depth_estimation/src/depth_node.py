#!/usr/bin/env python3
"""depth_node: camera CompressedImage -> depth (32FC1), colorized depth and diagnostics.

A thin ROS wrapper: all the work is in the ROS-free ``depth_estimation`` library. The
subscriber callback only hands the newest frame to a worker thread (frames the worker has
not taken are dropped and counted), so a slow model never builds a backlog.
"""
import copy
import sys
import threading

import rospy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from depth_estimation.framepath.frames import RejectedFrame
from depth_estimation.models.specs import ModelNotFound
from depth_estimation.framepath.pipeline import LatestSlot, NodeHealth, pipeline_from_params

PARAMS = ("model", "backend", "device", "half", "input_size", "threads", "colormap", "color_range",
          "color_percentiles", "color_vmin", "color_vmax", "jpeg_quality", "min_side", "max_side",
          "diagnostics_period", "stall_after")
BUFF_SIZE = 2 ** 24  # rospy reads whole messages only if its buffer holds one (a 1280x720 JPEG is ~0.5 MB)


def to_image(header, array, encoding):
    msg = Image(header=header, height=array.shape[0], width=array.shape[1], encoding=encoding,
                is_bigendian=0)
    msg.step = array.strides[0]
    msg.data = array.tobytes()
    return msg


class DepthNode:
    def __init__(self):
        self.params = {name: rospy.get_param("~" + name) for name in PARAMS}
        self.pipeline = pipeline_from_params(self.params)
        self.pipeline.estimator.load()
        estimator = self.pipeline.estimator
        self.health = NodeHealth(estimator.timer, {
            "model": estimator.name, "backend": estimator.backend, "device": estimator.device,
            "input_size": str(estimator.input_size),
            "weights": "RANDOM (untrained)" if estimator.spec.untrained else "trained"},
            stall_after=float(self.params["stall_after"]))
        self.slot = LatestSlot()
        self.camera_info = None
        self.camera_info_bad = None  # the CameraInfo message already counted as rejected
        self.warned = {}

        self.pub_depth = rospy.Publisher("~depth/image_raw", Image, queue_size=1)
        self.pub_color = rospy.Publisher("~depth/colorized", Image, queue_size=1)
        self.pub_jpeg = rospy.Publisher("~depth/colorized/compressed", CompressedImage, queue_size=1)
        self.pub_info = rospy.Publisher("~depth/camera_info", CameraInfo, queue_size=1)
        self.pub_diag = rospy.Publisher("/diagnostics", DiagnosticArray, queue_size=1)
        rospy.Subscriber("~camera_info", CameraInfo, self.on_camera_info, queue_size=1)
        rospy.Subscriber("~image/compressed", CompressedImage, self.on_image, queue_size=1,
                         buff_size=BUFF_SIZE)
        self.worker = threading.Thread(target=self.run, name="depth_worker", daemon=True)
        self.worker.start()
        rospy.Timer(rospy.Duration(float(self.params["diagnostics_period"])), self.publish_diagnostics)
        rospy.on_shutdown(self.slot.close)
        rospy.loginfo("depth_node: %s on %s, input short side %d; listening on %s",
                      estimator.name, estimator.device, estimator.input_size,
                      rospy.resolve_name("~image/compressed"))

    def on_camera_info(self, msg):
        self.camera_info = msg

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
                self.reject(exc)

    def process(self, msg):
        want_color = self.pub_color.get_num_connections() > 0
        want_jpeg = self.pub_jpeg.get_num_connections() > 0
        result = self.pipeline.process(msg.data, msg.format, colorized=want_color, jpeg=want_jpeg)
        height, width = result.depth.shape
        self.pub_depth.publish(to_image(msg.header, result.depth, "32FC1"))
        if want_color:
            self.pub_color.publish(to_image(msg.header, result.colorized, "bgr8"))
        if want_jpeg:
            self.pub_jpeg.publish(CompressedImage(header=msg.header, format="bgr8; jpeg compressed bgr8",
                                                  data=result.colorized_jpeg))
        info = self.camera_info
        if info is not None and info is not self.camera_info_bad:
            if (info.height, info.width) == (height, width):
                info_out = copy.copy(info)  # the stored message keeps its own header
                info_out.header = msg.header
                self.pub_info.publish(info_out)
            else:
                self.camera_info_bad = info
                self.reject(RejectedFrame("camera_info_size", "camera_info is %dx%d but frames are %dx%d"
                                          % (info.width, info.height, width, height)))
        self.health.frame_out(rospy.get_time(), msg.header.stamp.to_sec())

    def reject(self, exc):
        self.health.frame_rejected(exc.kind)
        now = rospy.get_time()
        if now - self.warned.get(exc.kind, -1e9) >= 30.0:  # once per kind, then every 30 s at most
            self.warned[exc.kind] = now
            rospy.logwarn("depth_node: dropped a bad input frame (%s); %d rejected so far",
                          exc, self.health.frames_rejected)

    def publish_diagnostics(self, _event=None):
        level, message, values = self.health.report(rospy.get_time())
        status = DiagnosticStatus(level=level, name="%s: depth estimation" % rospy.get_name(),
                                  message=message, hardware_id=self.health.info["device"],
                                  values=[KeyValue(k, v) for k, v in sorted(values.items())])
        self.pub_diag.publish(DiagnosticArray(header=rospy.Header(stamp=rospy.Time.now()), status=[status]))


def main():
    rospy.init_node("depth_node")
    try:
        DepthNode()
    except ModelNotFound as exc:
        rospy.logfatal("depth_node: %s", exc)
        sys.exit(1)
    except ValueError as exc:  # a bad parameter value
        rospy.logfatal("depth_node: bad parameter: %s", exc)
        sys.exit(2)
    rospy.spin()


if __name__ == "__main__":
    main()
