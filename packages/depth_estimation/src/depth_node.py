#!/usr/bin/env python3
"""depth_node: camera CompressedImage -> depth (32FC1), colorized depth and diagnostics.

A thin ROS wrapper: all the work is in the ROS-free ``depth_estimation`` library. The
subscriber callback only hands the newest frame to a worker thread (frames the worker has
not taken are dropped and counted), so a slow model never builds a backlog.

In the Duckietown image the node is a DTROS node (``NodeType.PERCEPTION``: Duckietown's ``~switch``,
parameters and diagnostics); on a plain ROS install :class:`PlainNode` gives it the same surface on
rospy (the same topics, parameters and ``~switch`` service). Switched off, frames are only counted
(``frames_paused``); ``~process_frequency`` caps the frames processed per second (``frames_throttled``);
``config/depth_node/<veh>.yaml`` is merged over the defaults at start and the colour settings,
``jpeg_quality`` and ``process_frequency`` are read again while the node runs.

Start-up checks every parameter, loads the model and runs it once on a blank frame of
``expected_frame_size``: any problem is one FATAL line per cause and a non-zero exit. While
running, a frame that fails is counted (``inference_errors``, ERROR in diagnostics) and the next
one is processed. A restarted ROS master (its registrations and parameters are gone) makes the
node exit with code 3 so that its launcher restarts it; SIGINT exits 0 within a second or two,
even in the middle of a long inference.
"""
import copy
import enum
import logging
import os
import sys
import threading
import time

import rosgraph
import rospkg
import rospy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header
from std_srvs.srv import SetBool, SetBoolResponse

from depth_estimation.framepath.frames import RejectedFrame
from depth_estimation.framepath.gate import FrameGate
from depth_estimation.framepath.health import ERROR, OK, WARN, error_line
from depth_estimation.framepath.params import (CHECKS, RUNTIME, ParameterError, check_params, read_param_file,
                                               robot_overrides, runtime_update)
from depth_estimation.framepath.pipeline import CameraInfoPairing, camera_info_problem, start_pipeline
from depth_estimation.framepath.slot import LatestSlot
from depth_estimation.models.specs import ModelNotFound

try:  # the Duckietown image (dt-ros-commons): importing it also decorates rospy.Publisher/Subscriber
    from duckietown.dtros import DTROS, DTParam, NodeType, ParamType
    from duckietown.dtros import NodeHealth as DTHealth
except ImportError:  # a plain ROS install: PlainNode below
    DTROS = DTParam = ParamType = None

    class NodeType(enum.Enum):  # the member of dt-ros-commons' NodeType this node uses
        PERCEPTION = 2

    class DTHealth(enum.Enum):  # the members of dt-ros-commons' NodeHealth this node uses
        HEALTHY, WARNING, ERROR = 10, 20, 30

BUFF_SIZE = 2 ** 24  # rospy reads whole messages only if its buffer holds one (a 1280x720 JPEG is ~0.5 MB)
WARN_EVERY = 30.0  # seconds between repeated warnings of one kind
EXIT_MASTER_RESTARTED = 3
PARAM_POLL = 0.5  # seconds between reads of the run-time parameters (from rospy's subscribed cache)
MISSING = object()
CONFIG_DIR_ENV = "DEPTH_NODE_CONFIG_DIR"  # where <veh>.yaml is looked for (default: the package's config)
DT_HEALTH = {OK: DTHealth.HEALTHY, WARN: DTHealth.WARNING, ERROR: DTHealth.ERROR}
# The /diagnostics publisher stays on while the node is switched off: DTROS switches off every
# rospy.Publisher made after its import and keeps the original class as rospy.__Publisher__.
PlainPublisher = getattr(rospy, "__Publisher__", rospy.Publisher)


def header_like(header):
    """A header of its own for each published message (rospy writes ``seq`` into the one it sends)."""
    return Header(stamp=header.stamp, frame_id=header.frame_id)


def to_image(header, array, encoding):
    msg = Image(header=header_like(header), height=array.shape[0], width=array.shape[1], encoding=encoding,
                is_bigendian=0)
    msg.step = array.strides[0]
    msg.data = array.tobytes()
    return msg


class PlainNode:
    """What this node uses of DTROS (dt-ros-commons, daffy), on plain rospy: the constructor's
    ``node_name``/``node_type``/``help``, a ``~switch`` service (std_srvs/SetBool) that sets the
    ``switch`` property and calls ``on_switch_on``/``on_switch_off``, ``set_health`` and
    ``on_shutdown``. tests/test_dtros.py holds this surface against the DTROS sources."""

    def __init__(self, node_name, node_type, help=None):  # noqa: A002 - DTROS's keyword
        rospy.init_node(node_name)
        self.node_name, self.node_type, self.node_help = rospy.get_name(), node_type, help
        self.is_shutdown = False
        self._switch = True
        self.srv_switch = rospy.Service("~switch", SetBool, self._srv_switch)
        rospy.on_shutdown(self._on_shutdown)

    @property
    def switch(self):
        return self._switch

    def _srv_switch(self, request):
        old, self._switch = self._switch, bool(request.data)
        (self.on_switch_on if self._switch else self.on_switch_off)()
        states = ("on" if old else "off", "on" if self._switch else "off")
        message = "Node switched from [%s] to [%s]" % states
        rospy.loginfo("[%s] %s", self.node_name, message)
        return SetBoolResponse(success=True, message=message)

    def on_switch_on(self):
        pass

    def on_switch_off(self):
        pass

    def set_health(self, health, reason=None):
        pass

    def _on_shutdown(self):
        self.is_shutdown = True
        self.on_shutdown()

    def on_shutdown(self):
        pass


BaseNode = DTROS if DTROS is not None else PlainNode


def robot_file(veh):
    """``<config dir>/<veh>.yaml`` (the package's config/depth_node unless $DEPTH_NODE_CONFIG_DIR)."""
    folder = os.environ.get(CONFIG_DIR_ENV) or package_config()
    return os.path.join(folder, veh + ".yaml")


def package_config():
    return os.path.join(rospkg.RosPack().get_path("depth_estimation"), "config", "depth_node")


def merge_robot_file():
    """Set this robot's own parameters (``<veh>.yaml``, ``veh`` = the first namespace) over the defaults."""
    veh = rospy.get_namespace().strip("/").split("/")[0]
    path = robot_file(veh) if veh else None
    if not path or not os.path.isfile(path):
        return
    robot = read_param_file(path)
    defaults = read_param_file(os.path.join(package_config(), "default.yaml"))
    given = {name: rospy.get_param("~" + name) for name in robot if rospy.has_param("~" + name)}
    changes, kept = robot_overrides(given, defaults, robot, source=path)  # ParameterError on unknown names
    for name, value in changes.items():
        rospy.set_param("~" + name, value)
    rospy.loginfo("depth_node: %s sets %s%s", path, ", ".join(sorted(changes)) or "nothing new",
                  "; kept the explicitly given %s" % ", ".join(kept) if kept else "")


class DepthNode(BaseNode):
    def __init__(self):
        super().__init__(node_name="depth_node", node_type=NodeType.PERCEPTION,
                         help="monocular depth (Depth-Anything-V2 and smaller variants) on the camera stream")
        merge_robot_file()
        raw = {name: rospy.get_param("~" + name) for name in CHECKS if rospy.has_param("~" + name)}
        self.params = check_params(raw)  # ParameterError names every bad parameter
        self.pipeline, self.health = start_pipeline(self.params)  # loaded and run once: fails now if at all
        estimator = self.pipeline.estimator
        self.slot = LatestSlot()
        self.gate = FrameGate()
        self.set_frequency(self.params["process_frequency"])
        self.camera_infos = CameraInfoPairing()
        self.warned, self.bad_runtime, self.reported_level = {}, None, None
        self.exit_code = 0
        if DTParam is not None:  # Duckietown: the run-time parameters are editable ones in its tools
            for name in RUNTIME:
                DTParam("~" + name, help="changes at run time",
                        param_type=ParamType.guess_type(self.params[name]))
        self._advertise()
        self.worker = threading.Thread(target=self.run, name="depth_worker", daemon=True)
        self.worker.start()
        rospy.Timer(rospy.Duration(float(self.params["diagnostics_period"])), self.publish_diagnostics)
        rospy.Timer(rospy.Duration(PARAM_POLL), self.reread_params)
        threading.Thread(target=self.watch_master, name="master_watch", daemon=True).start()
        rospy.loginfo("depth_node: %s on %s (%s), input short side %d; listening on %s",
                      estimator.name, estimator.device, estimator.backend, estimator.input_size,
                      rospy.resolve_name("~image/compressed"))

    def _advertise(self):
        self.pub_depth = rospy.Publisher("~depth/image_raw", Image, queue_size=1)
        self.pub_color = rospy.Publisher("~depth/colorized", Image, queue_size=1)
        self.pub_jpeg = rospy.Publisher("~depth/colorized/compressed", CompressedImage, queue_size=1)
        self.pub_info = rospy.Publisher("~depth/camera_info", CameraInfo, queue_size=1)
        self.pub_diag = PlainPublisher("/diagnostics", DiagnosticArray, queue_size=1)
        rospy.Subscriber("~camera_info", CameraInfo, self.on_camera_info, queue_size=10)
        rospy.Subscriber("~image/compressed", CompressedImage, self.on_image, queue_size=1,
                         buff_size=BUFF_SIZE)

    def on_camera_info(self, msg):
        self.camera_infos.store(msg.header.stamp.to_nsec(), msg)

    def on_image(self, msg):
        now = rospy.get_time()
        stamp = msg.header.stamp.to_sec() or now  # the camera's time; arrival time for unstamped frames
        skipped = self.gate.admit(stamp)
        if skipped:
            self.health.frame_skipped(now, skipped, msg.header.seq)
        else:
            self.health.frame_in(now, self.slot.put(msg), msg.header.seq)

    def on_switch_off(self):
        """~switch false (Duckietown's FSM): no inference, no output; the queued frame is not processed."""
        self.gate.pause()
        self.health.set_paused(True, rospy.get_time())
        if self.slot.take(timeout=0) is not None:
            self.health.frame_withheld()

    def on_switch_on(self):
        self.health.set_paused(False, rospy.get_time())
        self.gate.resume()

    def on_shutdown(self):
        if getattr(self, "slot", None) is not None:  # a shutdown while the model loads comes before it
            self.slot.close()

    def run(self):
        while not rospy.is_shutdown():
            msg = self.slot.take(timeout=0.5)
            if msg is None:
                continue
            if not self.gate.active:  # switched off after it was queued
                self.health.frame_withheld()
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
                self.health.inference_error(error_line(exc))
                rospy.logerr_throttle(WARN_EVERY, "depth_node: processing a frame failed (%s); %d failures "
                                      "so far, going on with the next frame"
                                      % (error_line(exc), self.health.inference_errors))

    def process(self, msg):
        want_color = self.pub_color.get_num_connections() > 0
        want_jpeg = self.pub_jpeg.get_num_connections() > 0
        result = self.pipeline.process(msg.data, msg.format, colorized=want_color, jpeg=want_jpeg)
        if not self.gate.active:  # switched off during the inference: nothing more goes out
            self.health.frame_withheld()
            return
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

    def set_frequency(self, frequency):
        """``~process_frequency``: the gate admits at most that many frames per second, and the stall
        check allows for that period between outputs."""
        self.gate.set_frequency(frequency)
        self.health.min_period = self.gate.period

    def reread_params(self, _event=None):
        """Apply changed run-time parameters (params.RUNTIME); a bad value is logged once and ignored."""
        try:
            raw = {name: rospy.get_param_cached("~" + name, MISSING) for name in RUNTIME}
            changes = runtime_update(self.params, {k: v for k, v in raw.items() if v is not MISSING})
        except ParameterError as exc:
            if exc.problems != self.bad_runtime:
                self.bad_runtime = exc.problems
                rospy.logwarn("depth_node: ignored a run-time parameter change, keeping the previous "
                              "values: %s", "; ".join(exc.problems))
            return
        except Exception:  # noqa: BLE001 - master away for a moment: watch_master decides, try again later
            return
        self.bad_runtime = None
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
        if level != self.reported_level:  # DTROS: the node's health in Duckietown's diagnostics
            self.reported_level = level
            self.set_health(DT_HEALTH[level], message if level != OK else None)
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
        rospy.logfatal("depth_node: cannot start: %s", error_line(exc))
        exit_now(1)


def main():
    node = start()  # DepthNode initializes the ROS node (DTROS or PlainNode)
    rospy.spin()
    node.worker.join(timeout=1.0)
    exit_now(node.exit_code)


if __name__ == "__main__":
    main()
