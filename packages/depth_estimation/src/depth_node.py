#!/usr/bin/env python3
"""depth_node: camera CompressedImage -> depth (32FC1), colorized depth, metric outputs, diagnostics.

A thin ROS wrapper around the ROS-free ``depth_estimation`` library: frames go to ``framepath.stream``
(decode | network | colorize+publish), metres come from ``framepath.metric``; no output subscribed, no
inference. DTROS in the Duckietown image, :class:`PlainNode` elsewhere. ``<veh>.yaml`` is merged over
the defaults, launch values win. A bad start is one FATAL line per cause; a restarted ROS master exits
with code 3; SIGINT/SIGTERM exit 0 at once; ROS time or camera stamps going back cost no output.
"""
import copy
import enum
import math
import os
import sys
import threading

import rosgraph
import rospkg
import rospy
from rospy.client import load_command_line_node_params
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, LaserScan, PointCloud2, PointField, Range
from std_msgs.msg import Header
from std_srvs.srv import SetBool, SetBoolResponse

from depth_estimation.framepath.background import every, watch_restart
from depth_estimation.framepath.gate import IDLE, FrameGate
from depth_estimation.framepath.metric import CalibrationError, check_calibration
from depth_estimation.framepath.health import ERROR, OK, WARN, error_line
from depth_estimation.framepath.launcher import exit_now, forward_logs
from depth_estimation.framepath.params import (CHECKS, RUNTIME, ParameterError, check_params,
                                               robot_file_values, runtime_update)
from depth_estimation.framepath.pipeline import CameraInfoPairing, camera_info_problem, start_pipeline
from depth_estimation.framepath.stream import Frame, FrameStream
from depth_estimation.geometry import tof
from depth_estimation.models.specs import ModelNotFound
from depth_estimation.options import use_cpu_threads

try:  # the Duckietown image (dt-ros-commons): importing it also decorates rospy.Publisher/Subscriber
    from duckietown.dtros import DTROS, DTParam, NodeType, ParamType
    from duckietown.dtros import NodeHealth as DTHealth
except ImportError:  # a plain ROS install: PlainNode below, and the members of dt-ros-commons' enums it uses
    DTROS = DTParam = ParamType = None
    NodeType = enum.Enum("NodeType", {"PERCEPTION": 2})
    DTHealth = enum.Enum("NodeHealth", {"HEALTHY": 10, "WARNING": 20, "ERROR": 30})

BUFF_SIZE = 2 ** 24  # rospy reads whole messages only if its buffer holds one (a 1280x720 JPEG is ~0.5 MB)
WARN_EVERY = 30.0  # seconds between repeated warnings of one kind
EXIT_MASTER_RESTARTED = 3
PARAM_POLL = 0.5  # seconds between reads of the run-time parameters (from rospy's subscribed cache)
MISSING = object()
NAME = "depth_node"
METRIC_TOPICS = (("metric", "~depth/metric", Image), ("metric_info", "~depth/metric/camera_info", CameraInfo),
                 ("scan", "~scan", LaserScan), ("range", "~obstacle_distance", Range),
                 ("tof", "~tof/metric_range", Range), ("points", "~points", PointCloud2),
                 ("rect", "~depth/metric_rect/image_rect", Image),
                 ("rect_info", "~depth/metric_rect/camera_info", CameraInfo))  # rect: for depth_image_proc
DT_HEALTH = {OK: DTHealth.HEALTHY, WARN: DTHealth.WARNING, ERROR: DTHealth.ERROR}
# The /diagnostics publisher stays on while the node is switched off: DTROS switches off every
# rospy.Publisher made after its import and keeps the original class as rospy.__Publisher__.
PlainPublisher = getattr(rospy, "__Publisher__", rospy.Publisher)
XYZ = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, n in enumerate("xyz")]


def header_like(header):
    """A header of its own for each published message (rospy writes ``seq`` into the one it sends)."""
    return Header(stamp=header.stamp, frame_id=header.frame_id)


def info_with(info, header):
    """A copy of a stored camera_info with the frame's header (the stored message keeps its own)."""
    info_out = copy.copy(info)
    info_out.header = header_like(header)
    return info_out


def to_image(header, array, encoding):
    msg = Image(header=header_like(header), height=array.shape[0], width=array.shape[1], encoding=encoding,
                is_bigendian=0, step=array.strides[0])
    msg.data = array.tobytes()
    return msg


class PlainNode:
    """What this node uses of DTROS (dt-ros-commons, daffy) on plain rospy: the constructor's keywords,
    ``~switch`` (SetBool) with ``switch`` and its hooks, ``set_health``, ``on_shutdown`` (test_dtros.py)."""

    def __init__(self, node_name, node_type, help=None):  # noqa: A002 - DTROS's keyword
        rospy.init_node(node_name)
        self.node_name, self.node_type, self.node_help = rospy.get_name(), node_type, help
        self.is_shutdown, self._switch = False, True
        self.srv_switch = rospy.Service("~switch", SetBool, self._srv_switch)
        rospy.on_shutdown(self._on_shutdown)

    @property
    def switch(self):
        return self._switch

    def _srv_switch(self, request):
        old, self._switch = self._switch, bool(request.data)
        (self.on_switch_on if self._switch else self.on_switch_off)()
        message = "Node switched from [%s] to [%s]" % tuple("on" if s else "off" for s in (old, self._switch))
        rospy.loginfo("[%s] %s", self.node_name, message)
        return SetBoolResponse(success=True, message=message)

    def _on_shutdown(self):
        self.is_shutdown = True
        self.on_shutdown()

    def _hook(self, *args, **kwargs):  # DTROS's hooks (set_health(health, reason=None)...): nothing here
        pass

    on_switch_on = on_switch_off = on_shutdown = set_health = _hook


BaseNode = DTROS if DTROS is not None else PlainNode


def package_config():
    return os.path.join(rospkg.RosPack().get_path("depth_estimation"), "config", "depth_node")


def vehicle():
    """The robot's name: the node's first namespace (``/<veh>/depth_node``), "" when there is none."""
    return rospy.get_namespace().strip("/").split("/")[0]


def launch_values():
    """The node's parameters as the launch (or ``_name:=value``) gave them, before the base class runs."""
    name = rosgraph.names.ns_join(rospy.names.get_namespace(), rospy.names.get_mappings().get("__name", NAME))
    try:
        values = rosgraph.Master("/%s_start" % NAME).getParam(name)
    except Exception:  # noqa: BLE001 - none set, or no master yet: the base class says so next
        values = {}
    return dict(values if isinstance(values, dict) else {}, **load_command_line_node_params(sys.argv))


def merge_robot_file(given):
    """This robot's own parameters (``<veh>.yaml``) over the defaults; a value the launch gave (``given``,
    from :func:`launch_values`) wins, on both bases (ParameterError for an unknown name)."""
    values, line = robot_file_values(package_config(), vehicle(), given)
    for name, value in values.items():
        rospy.set_param("~" + name, value)
    if line:
        rospy.loginfo("depth_node: %s", line)


class DepthNode(BaseNode):
    def __init__(self):
        given = launch_values()
        self.gate = FrameGate()  # before the base's ~switch service can call on_switch_off
        super().__init__(node_name=NAME, node_type=NodeType.PERCEPTION,
                         help="monocular depth (Depth-Anything-V2 and smaller variants) on the camera stream")
        forward_logs(rospy)  # the library's log lines to the console and /rosout
        merge_robot_file(given)
        raw = {name: rospy.get_param("~" + name) for name in CHECKS if rospy.has_param("~" + name)}
        self.params = check_params(raw)  # ParameterError names every bad parameter
        self.metric = check_calibration(self.params, vehicle(), self.warn)  # None when off; CalibrationError
        frame = self.params["ground_frame"]
        self.ground_frame = frame if "/" in frame or not vehicle() else "%s/%s" % (vehicle(), frame)
        rospy.loginfo("depth_node: loading %s", self.params["model"])
        use_cpu_threads(self.params["threads"])  # process-wide (torch), before the model loads
        self.pipeline, self.health = start_pipeline(self.params)  # loaded and run once: fails now if at all
        estimator = self.pipeline.estimator
        self.health.set_paused(not self.switch, rospy.get_time())  # a ~switch false while loading holds
        self.set_frequency(self.params["process_frequency"])
        self.camera_infos = CameraInfoPairing()
        self.warned, self.bad_runtime, self.reported_level = {}, set(), None
        self.time_jumped, self.exit_code = False, 0
        if DTParam is not None:  # Duckietown: the run-time parameters are editable ones in its tools
            for name in RUNTIME:
                DTParam("~" + name, help="changes at run time",
                        param_type=ParamType.guess_type(self.params[name]))
        self.stream = FrameStream(self.pipeline, self.health, self.publish_result, wants=self.wants,
                                  active=lambda: self.gate.active, clock=rospy.get_time, warn=self.warn,
                                  pipelined=self.params["pipelined"]).start()
        self._advertise()  # publishers before frames can arrive: the stream publishes on them
        for period, call in ((self.params["diagnostics_period"], self.publish_diagnostics),
                             (PARAM_POLL, self.reread_params)):
            every(float(period), call, rospy.sleep, rospy.is_shutdown, rospy.ROSTimeMovedBackwardsException,
                  self.time_jump, lambda exc: self.warn("timer", "timer: %s", error_line(exc)))
        threading.Thread(target=self.watch_master, name="master_watch", daemon=True).start()
        rospy.loginfo("depth_node: %s on %s (%s), input short side %d; listening on %s",
                      estimator.name, estimator.device, estimator.backend_text, estimator.input_size,
                      rospy.resolve_name("~image/compressed"))

    def time_jump(self, exc):  # rospy.Timer would die; the node's timers (framepath.background) go on
        if not self.time_jumped:
            self.time_jumped = True
            rospy.logwarn("depth_node: ROS time moved backwards by %.1f s (a looped bag or a restarted "
                          "simulator); diagnostics and parameter checks go on from the new time", exc.time)

    def _advertise(self):
        self.pub_depth = rospy.Publisher("~depth/image_raw", Image, queue_size=1)
        self.pub_color = rospy.Publisher("~depth/colorized", Image, queue_size=1)
        self.pub_jpeg = rospy.Publisher("~depth/colorized/compressed", CompressedImage, queue_size=1)
        self.pub_info = rospy.Publisher("~depth/camera_info", CameraInfo, queue_size=1)
        self.pub_diag = PlainPublisher("/diagnostics", DiagnosticArray, queue_size=1)
        if self.metric is not None:  # metric off: no publishers, no cost
            for name, topic, kind in METRIC_TOPICS:
                setattr(self, "pub_" + name, rospy.Publisher(topic, kind, queue_size=1))
            if self.metric.warning:
                rospy.logwarn("depth_node: %s", self.metric.warning)
            if self.params["tof_topic"]:  # the front ToF for the cross-check (framepath.tof_check)
                rospy.Subscriber(self.params["tof_topic"], Range, queue_size=10, callback=lambda m: (
                    self.metric.tof.reading(m.header.stamp.to_sec() or rospy.get_time(), m.range)))
            try:  # dt-ros-commons' messages (the Duckietown image): for dt-core's lane controller
                from duckietown_msgs.msg import StopLineReading
                self.pub_stop_line = rospy.Publisher("~virtual_stop_line", StopLineReading, queue_size=1)
            except ImportError:
                rospy.loginfo("depth_node: ~virtual_stop_line is off: duckietown_msgs is not installed")
        rospy.Subscriber("~camera_info", CameraInfo, queue_size=10,
                         callback=lambda msg: self.camera_infos.store(msg.header.stamp.to_nsec(), msg))
        rospy.Subscriber("~image/compressed", CompressedImage, self.on_image, queue_size=1,
                         buff_size=BUFF_SIZE)

    def on_image(self, msg):
        now = rospy.get_time()
        stamp_ns = msg.header.stamp.to_nsec() or int(round(now * 1e9))  # arrival time for unstamped frames
        skipped = self.gate.admit(stamp_ns) or (None if self.listened() else IDLE)
        if skipped:
            self.health.frame_skipped(now, skipped, msg.header.seq)
        else:
            self.stream.submit(Frame(msg.data, msg.format, stamp_ns / 1e9, msg.header), msg.header.seq)

    def on_switch_off(self):
        """~switch false (Duckietown FSM): no inference or output, queued frame withheld; loading: gate."""
        self.gate.pause()
        if getattr(self, "stream", None) is not None:
            self.health.set_paused(True, rospy.get_time())
            self.stream.withhold_queued()

    def on_switch_on(self):
        if getattr(self, "health", None) is not None:
            self.health.set_paused(False, rospy.get_time())
        self.gate.resume()

    def listened(self):  # any output subscribed? (else no inference: ROS drivers' lazy work)
        return any(pub.get_num_connections() > 0 for name, pub in vars(self).items()
                   if name.startswith("pub_") and name != "pub_diag")

    def on_shutdown(self):
        """SIGINT/SIGTERM (rospy's handler, in the main thread): during the model load, which has no
        stream yet and would otherwise run to its end (seconds, a TensorRT build minutes), exit now."""
        if getattr(self, "stream", None) is None:
            exit_now(0)
        self.stream.close(timeout=0)

    def wants(self):
        """(colorized, jpeg): make the colour images only while someone subscribes to them."""
        return self.pub_color.get_num_connections() > 0, self.pub_jpeg.get_num_connections() > 0

    def publish_result(self, frame, result):
        """The output stage of the stream: one frame's depth (and colour images) as ROS messages."""
        header = frame.meta
        self.pub_depth.publish(to_image(header, result.depth, "32FC1"))
        if result.colorized is not None and self.pub_color.get_num_connections() > 0:
            self.pub_color.publish(to_image(header, result.colorized, "bgr8"))
        if result.colorized_jpeg is not None:
            self.pub_jpeg.publish(CompressedImage(header=header_like(header), data=result.colorized_jpeg,
                                                  format="bgr8; jpeg compressed bgr8"))
        info = self.camera_infos.find(header.stamp.to_nsec())
        self.publish_camera_info(header, info, *result.depth.shape)  # height, width
        if self.metric is not None:
            self.publish_metric(header, frame.stamp, info, result.depth)

    def publish_metric(self, header, stamp, info, disparity):
        """Metres: depth (+ camera_info), scan, obstacle distance, stop line, points at ``stamp`` (s; arrival
        for an unstamped frame); nothing while the fit is not confident (NONE) or there is no camera_info."""
        out = self.metric.process(disparity, stamp, info)
        if out is None or out.frame.depth_m is None:
            return
        self.pub_metric.publish(to_image(header, out.frame.depth_m, "32FC1"))
        self.pub_metric_info.publish(info_with(info, header))
        if self.pub_rect.get_num_connections() > 0 or self.pub_rect_info.get_num_connections() > 0:
            rect, camera = self.metric.rectified(out)  # D = 0, K = P: what depth_image_proc projects with
            self.pub_rect.publish(to_image(header, rect, "32FC1"))
            self.pub_rect_info.publish(CameraInfo(header=header_like(header), **camera._asdict()))
        ground, p, scan = Header(stamp=header.stamp, frame_id=self.ground_frame), self.params, out.scan
        self.pub_scan.publish(LaserScan(header=ground, angle_min=scan.angle_min, angle_max=scan.angle_max,
                                        angle_increment=scan.angle_increment, range_min=scan.range_min,
                                        range_max=scan.range_max, ranges=scan.ranges.tolist()))
        self.pub_range.publish(Range(header=header_like(ground), radiation_type=Range.INFRARED,
                                     field_of_view=2 * math.atan2(p["corridor_width"] / 2,
                                                                  p["obstacle_max_range"]),
                                     min_range=0.0, max_range=p["obstacle_max_range"], range=out.distance))
        if out.tof is not None:  # the front ToF's reading as this frame's metric depth predicts it
            self.pub_tof.publish(Range(header=Header(stamp=header.stamp, frame_id=tof.frame_id(vehicle())),
                                       range=out.tof.metric_m, **tof.RANGE_FIELDS))
        if (line := out.stop_line) and getattr(self, "pub_stop_line", None):  # None unless OK or HOLD
            self.pub_stop_line.publish(header_like(ground), *line[:2], Point(x=line[2]))  # StopLineReading
        if out.points is not None:  # x, y, z float32 in the camera's optical frame
            n = len(out.points)
            self.pub_points.publish(PointCloud2(header=header_like(header), height=1, width=n, fields=XYZ,
                                                point_step=12, row_step=12 * n, data=out.points.tobytes()))

    def publish_camera_info(self, header, info, height, width):
        if info is None:  # counted when the camera publishes camera_info at all
            if self.camera_infos.received:
                self.health.camera_info_missing()
            return
        problem = camera_info_problem(info, height, width)
        if problem:
            self.health.camera_info_mismatch(problem)
            self.warn("camera_info", "%s: depth is published without camera_info", problem)
            return
        self.pub_info.publish(info_with(info, header))

    def warn(self, kind, text, *args):
        now = rospy.get_time()
        if now - self.warned.get(kind, -1e9) >= WARN_EVERY:  # once per kind, then every 30 s at most
            self.warned[kind] = now
            (rospy.logerr if kind == "error" else rospy.logwarn)("depth_node: " + text, *args)

    def set_frequency(self, frequency):
        """``~process_frequency``: the gate's frames per second at most; the stall check allows its period."""
        self.gate.set_frequency(frequency)
        self.health.min_period = self.gate.period

    def reread_params(self, _event=None):
        """Apply each valid change of a run-time parameter (params.RUNTIME); each bad one is said once."""
        try:
            raw = {name: rospy.get_param_cached("~" + name, MISSING) for name in RUNTIME}
        except Exception as exc:  # noqa: BLE001 - master away for a moment: watch_master decides, try again
            self.warn("param_poll", "cannot read the run-time parameters (trying again): %s", error_line(exc))
            return
        changes, problems = runtime_update(self.params, {k: v for k, v in raw.items() if v is not MISSING})
        for problem in sorted(set(problems) - self.bad_runtime):  # each bad value once, on a line of its own
            rospy.logwarn("depth_node: ignored a run-time parameter change, keeping the previous one: %s",
                          problem)
        self.bad_runtime = set(problems)
        if not changes:
            return
        self.params.update(changes)
        self.pipeline.configure(self.params)
        self.set_frequency(self.params["process_frequency"])
        rospy.loginfo("depth_node: run-time parameters changed: %s",
                      ", ".join("%s=%s" % kv for kv in sorted(changes.items())))

    def publish_diagnostics(self, _event=None):
        level, message, values = self.health.report(rospy.get_time())
        values["process_frequency"] = "%g" % self.gate.frequency
        for key, value in self.pipeline.estimator.memory_stats().items():  # rss_mb, gpu_mem_mb
            values[key] = "nan" if value is None else "%.1f" % value
        if self.metric is not None:
            metric_values, warning = self.metric.report(rospy.get_time())
            values.update(metric_values)
            if warning and level == OK:
                level, message = WARN, warning
        if level != self.reported_level:  # DTROS: the node's health in Duckietown's diagnostics
            self.reported_level = level
            self.set_health(DT_HEALTH[level], message if level != OK else None)
        status = DiagnosticStatus(level=level, name="%s: depth estimation" % rospy.get_name(),
                                  message=message, hardware_id=self.health.info["device"],
                                  values=[KeyValue(k, v) for k, v in sorted(values.items())])
        self.pub_diag.publish(DiagnosticArray(header=rospy.Header(stamp=rospy.Time.now()), status=[status]))

    def watch_master(self):
        """Exit (code 3) when the ROS master restarts: this node's registrations are gone with it."""
        uri = rosgraph.get_master_uri()
        watch_restart(rosgraph.Master(rospy.get_name()).getPid, rospy.is_shutdown,
                      lambda: rospy.logwarn("depth_node: the ROS master at %s is unreachable", uri),
                      self.master_restarted)

    def master_restarted(self, pid, first_pid):
        rospy.logfatal("depth_node: the ROS master at %s restarted (pid %d, was %d); its registrations and "
                       "parameters are gone, exiting so that the launcher restarts this node",
                       rosgraph.get_master_uri(), pid, first_pid)
        self.exit_code = EXIT_MASTER_RESTARTED
        rospy.signal_shutdown("ROS master restarted")


def start():
    try:
        return DepthNode()
    except ParameterError as exc:
        for problem in exc.problems:
            rospy.logfatal("depth_node: %s", problem)
        exit_now(2)
    except CalibrationError as exc:
        rospy.logfatal("depth_node: metric depth cannot use its calibration: %s", exc)
        exit_now(2)
    except ModelNotFound as exc:
        rospy.logfatal("depth_node: %s", exc)
        exit_now(1)
    except Exception as exc:  # noqa: BLE001 - backend, device or model failures: one line, non-zero exit
        rospy.logfatal("depth_node: cannot start: %s", error_line(exc))
        exit_now(1)


def main():
    node = start()  # DepthNode initializes the ROS node (DTROS or PlainNode)
    rospy.spin()
    node.stream.close(timeout=1.0)
    exit_now(node.exit_code)


if __name__ == "__main__":
    main()
