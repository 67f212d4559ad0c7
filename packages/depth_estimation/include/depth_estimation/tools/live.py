"""``depth-live``: depth from a Duckiebot's camera (or the Duckiematrix's) live, with no ROS at all.

Camera frames come through duckietown-sdk (:mod:`.live_sdk`, the only module that touches it) and
go through the ROS node's own frame path: the pipeline of ``config/depth_node/default.yaml`` (with
``--config``, ``--model``, ``--backend``, ``--device``, ``--input-size``, ``--threads`` over it), the
same bad-frame checks, the latest-frame slot (a slow model drops frames, it never builds a backlog)
and the node's health counters. Every frame ends in exactly one of depth out, dropped (replaced
before the model was free), rejected (bad input, by kind) or an inference error, so ``frames_in =
out + dropped + rejected + errors`` when the run ends.

camera | depth is shown in a window when a display exists; ``--out DIR`` (the default when there is
no display) writes a video, optionally every frame, and ``report.json`` (counters, latency
percentiles). A camera that cannot be reached, or a stream that stops, ends the run with one clear
line and exit code 3 after ``--connect-timeout`` / ``--frame-timeout`` seconds, never a hang.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import yaml

from depth_estimation import options
from depth_estimation.framepath import frames
from depth_estimation.framepath.health import NodeHealth, error_line
from depth_estimation.framepath.params import ParameterError, check_params
from depth_estimation.framepath.pipeline import DepthPipeline, DepthResult, start_pipeline
from depth_estimation.framepath.slot import LatestSlot
from depth_estimation.framepath.stream import handle_frame
from depth_estimation.io.atomic import output_problem
from depth_estimation.io.paths import PACKAGE_DIR
from depth_estimation.models.specs import parse_spec
from depth_estimation.tools.live_output import Recorder, Window, display_available, side_by_side
from depth_estimation.tools.live_sdk import ROBOT_TYPES, SIM_ROBOT, CameraError, SdkCamera

DEFAULT_CONFIG = os.path.join(PACKAGE_DIR, "config", "depth_node", "default.yaml")
EXIT_PARAMS, EXIT_CAMERA = 2, 3
LATENCY_WINDOW = 100000  # frames kept for the run's latency percentiles (about an hour at 30 Hz)
WARN_EVERY = 5.0


class LiveLoop:
    """Frames in from the camera's thread, into the latest-frame slot; the caller's thread runs the
    pipeline on the newest one (:meth:`process_next`) and keeps the node's health counters."""

    def __init__(self, pipeline: DepthPipeline, health: NodeHealth, max_frames: int = 0,
                 clock: Callable[[], float] = time.monotonic, log: Callable[[str], None] = print):
        self.pipeline, self.health, self.max_frames = pipeline, health, int(max_frames)
        self.clock, self.log = clock, log
        self.slot = LatestSlot()
        self.accepting = True
        self.last_frame: Optional[float] = None
        self.drained = False  # no frame will come in any more and the slot was found empty
        self._lock = threading.Lock()
        self._warned: Dict[str, float] = {}

    def on_frame(self, data: bytes, fmt: str = "") -> None:
        """One camera frame (any thread): replaces the one waiting, which is counted as dropped."""
        with self._lock:
            if not self.accepting:
                return
            now = self.clock()
            self.last_frame = now
            self.health.frame_in(now, self.slot.put((data, fmt, now)))
            if self.max_frames and self.health.frames_in >= self.max_frames:
                self.accepting = False

    def stop_accepting(self) -> None:
        with self._lock:
            self.accepting = False

    def process_next(self, timeout: float) -> Optional[Tuple[bytes, str, DepthResult]]:
        """Depth for the newest frame, or None (no frame within ``timeout``, or it was bad/failed)."""
        closed = not self.accepting  # read before take: no frame can arrive after an empty take then
        item = self.slot.take(timeout)
        if item is None:
            self.drained = closed
            return None
        data, fmt, arrived = item
        result = handle_frame(self.health, lambda: self.pipeline.process(data, fmt, colorized=True,
                                                                         jpeg=False), self._warn)
        if result is None:  # a bad or failing frame, counted
            return None
        self.health.frame_out(self.clock(), arrived)
        return data, fmt, result

    def check_stream(self, started: float, connect_timeout: float, frame_timeout: float,
                     describe: str, diagnose: Callable[[], str]) -> None:
        """CameraError when no frame came within ``connect_timeout`` s, or none for ``frame_timeout`` s."""
        now = self.clock()
        if self.last_frame is None and now - started > connect_timeout:
            raise CameraError("no camera frame from %s within %.1f s: %s"
                              % (describe, connect_timeout, diagnose()))
        if self.last_frame is not None and self.accepting and now - self.last_frame > frame_timeout:
            raise CameraError("the camera stream stopped: no frame from %s for %.1f s after %d frame(s): %s"
                              % (describe, now - self.last_frame, self.health.frames_in, diagnose()))

    def _warn(self, kind: str, message: str) -> None:
        now = self.clock()
        if now - self._warned.get(kind, -1e9) >= WARN_EVERY:
            self._warned[kind] = now
            self.log("[depth-live] " + message)


def load_params(config: Optional[str], overrides: Dict[str, Any]) -> Dict[str, Any]:
    """The node's parameters: default.yaml, then ``config`` over it, then the options given, checked.
    default.yaml's ``input_size`` is a Depth-Anything-V2 size: another model (the student) runs at its
    own size (0) unless ``--input-size`` or the config says otherwise, as the demo runs it."""
    with open(DEFAULT_CONFIG) as f:
        raw = yaml.safe_load(f)
    chosen: Dict[str, Any] = {}
    if config:
        with open(config) as f:
            chosen = yaml.safe_load(f) or {}
        raw.update(chosen)
    given = {name: value for name, value in overrides.items() if value is not None}
    model = given.get("model", raw["model"])
    if "input_size" not in given and "input_size" not in chosen and not _is_da2(model):
        given["input_size"] = 0
    raw.update(given)
    return check_params(raw)


def _is_da2(model: Any) -> bool:
    try:
        return parse_spec(str(model)).family == "da2"
    except ValueError:
        return True  # check_params / the loader say what is wrong with it


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="depth-live",
        description="Depth from a Duckiebot's camera (or the Duckiematrix's) live, without ROS: "
                    "duckietown-sdk's camera through the depth node's frame path.",
        epilog="Exit codes: 0 done, 1 the model failed to load, 2 bad options or parameters, "
               "3 the camera could not be reached or its stream stopped.")
    src = parser.add_argument_group("camera (duckietown-sdk over DTPS)")
    src.add_argument("--robot", metavar="NAME", help="the robot's name (reached at NAME.local); with --sim "
                     "the simulated robot's name (default %s)" % SIM_ROBOT)
    src.add_argument("--sim", action="store_true", help="the Duckiematrix on this machine instead of a robot")
    src.add_argument("--robot-type", default="db21m", choices=ROBOT_TYPES, help="default db21m")
    src.add_argument("--host", help="the switchboard's address (default NAME.local, or 127.0.0.1 with --sim)")
    src.add_argument("--port", type=int, help="the switchboard's port (default duckietown-sdk's)")
    model = parser.add_argument_group("model (default: config/depth_node/default.yaml, like the node)")
    model.add_argument("--config", metavar="FILE", help="a YAML of node parameters over default.yaml")
    model.add_argument("--model", help=options.MODEL_HELP)
    model.add_argument("--backend", choices=options.BACKEND_CHOICES)
    model.add_argument("--device", choices=options.DEVICES)
    model.add_argument("--input-size", type=int, metavar="N", help=options.INPUT_SIZE_HELP.replace(
        "default 0", "default: the config's input_size for Depth-Anything-V2 (308 in default.yaml), 0 for "
        "other models"))
    model.add_argument("--threads", type=int, metavar="N", help="CPU threads; 0 = all cores")
    out = parser.add_argument_group("output")
    out.add_argument("--out", metavar="DIR", help="write live.avi (camera | depth), report.json "
                     "(and with --save-frames frames/*.jpg) here; the default without a display")
    out.add_argument("--save-frames", action="store_true", help="also write every camera | depth pair")
    out.add_argument("--video-fps", type=float, default=15.0, help="frame rate written into live.avi")
    out.add_argument("--no-window", action="store_true", help="no window even when a display exists")
    stop = parser.add_argument_group("when to stop")
    stop.add_argument("--frames", type=int, default=0, metavar="N", help="after N camera frames (0 = never)")
    stop.add_argument("--duration", type=float, default=0.0, metavar="S", help="after S seconds (0 = never)")
    stop.add_argument("--connect-timeout", type=float, default=20.0, metavar="S",
                      help="fail when no first frame comes within S seconds (default 20)")
    stop.add_argument("--frame-timeout", type=float, default=5.0, metavar="S",
                      help="fail when the stream pauses for S seconds (default 5)")
    stop.add_argument("--status-every", type=float, default=5.0, metavar="S",
                      help="print the counters every S seconds (0 = never)")
    return parser


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.robot and not args.sim:
        parser.error("pass --robot NAME (a robot) or --sim (the Duckiematrix)")
    args.robot = args.robot or SIM_ROBOT
    for name in ("frames", "duration", "connect_timeout", "frame_timeout", "video_fps"):
        if getattr(args, name) < 0 or (name.endswith(("timeout", "fps")) and getattr(args, name) == 0):
            parser.error("--%s must be positive" % name.replace("_", "-"))
    return args


def counts(health: NodeHealth) -> Dict[str, Any]:
    return {"frames_in": health.frames_in, "frames_out": health.frames_out,
            "frames_dropped": health.frames_dropped, "frames_rejected": health.frames_rejected,
            "rejected_kinds": dict(health.rejected_kinds), "inference_errors": health.inference_errors}


def latency(health: NodeHealth) -> Dict[str, Any]:
    values = list(health.end_to_end.values)
    stat = (lambda f: round(float(f(values)), 2) if values else None)
    return {"what": "camera frame arrival -> depth ready, ms", "count": len(values),
            "p50": stat(lambda v: np.percentile(v, 50)), "p95": stat(lambda v: np.percentile(v, 95)),
            "max": stat(np.max)}


def build_report(health: NodeHealth, source: str, seconds: float, stopped: str,
                 error: Optional[str], files: Optional[Dict[str, Optional[str]]]) -> Dict[str, Any]:
    report: Dict[str, Any] = {"source": source}
    report.update(health.info)
    report.update(counts(health))
    c = report
    report["accounted"] = c["frames_in"] == (c["frames_out"] + c["frames_dropped"] + c["frames_rejected"]
                                            + c["inference_errors"])
    report["latency_ms"] = latency(health)
    stages = {stage: health.timer.percentile(stage, 50) for stage in
              ("decode", "preprocess", "infer", "postprocess", "colorize")}
    report["stage_ms_p50"] = {k: None if v is None else round(v, 2) for k, v in stages.items()}
    report["duration_s"] = round(seconds, 3)
    report["depth_hz"] = round(health.frames_out / seconds, 3) if seconds > 0 else 0.0
    report["camera_hz"] = round(health.frames_in / seconds, 3) if seconds > 0 else 0.0
    report.update({"stopped": stopped, "error": error, "files": files})
    return report


def summary(report: Dict[str, Any]) -> str:
    lat = report["latency_ms"]
    fmt = (lambda v: "n/a" if v is None else "%.1f ms" % v)
    return ("depth-live: %d frames in, %d depth frames out, %d dropped, %d rejected, %d errors in %.1f s "
            "(%.1f Hz depth); latency p50 %s, p95 %s (frame arrival -> depth)"
            % (report["frames_in"], report["frames_out"], report["frames_dropped"], report["frames_rejected"],
               report["inference_errors"], report["duration_s"], report["depth_hz"], fmt(lat["p50"]),
               fmt(lat["p95"])))


class Outputs:
    """The window and/or the recorder, fed with camera | depth."""

    def __init__(self, window: Optional[Window], recorder: Optional[Recorder], pipeline: DepthPipeline):
        self.window, self.recorder, self.pipeline = window, recorder, pipeline

    def show(self, got: Optional[Tuple[bytes, str, DepthResult]]) -> bool:
        """False once the user closed the window."""
        image = None
        if got is not None and (self.window or self.recorder):
            data, fmt, result = got
            p = self.pipeline
            camera = frames.decode(data, fmt, p.min_side, p.max_side, p.max_aspect)  # valid: it made depth
            image = side_by_side(camera, result.colorized)
            if self.recorder:
                self.recorder.write(image)
        return self.window.show(image) if self.window else True

    def close(self) -> None:
        if self.window:
            self.window.close()
        if self.recorder:
            self.recorder.close()


def drive(loop: LiveLoop, outputs: Outputs, args: argparse.Namespace, camera: Any, started: float) -> str:
    """Process frames until a stop condition; returns why it stopped (CameraError when the stream fails)."""
    last_status = started
    while True:
        if not outputs.show(loop.process_next(timeout=0.05)):
            return "window closed"
        now = loop.clock()
        if args.frames and loop.drained:
            return "%d frames" % args.frames
        if args.duration and now - started >= args.duration:
            return "%.1f s" % args.duration
        loop.check_stream(started, args.connect_timeout, args.frame_timeout, camera.describe(),
                          camera.diagnose)
        if args.status_every and now - last_status >= args.status_every:
            last_status = now
            c = counts(loop.health)
            print("[depth-live] %(frames_in)d in, %(frames_out)d out, %(frames_dropped)d dropped, "
                  "%(frames_rejected)d rejected, %(inference_errors)d errors" % c, flush=True)


def open_outputs(args: argparse.Namespace, pipeline: DepthPipeline) -> Outputs:
    show = not args.no_window and display_available()
    out = args.out
    if not show and not out:
        out = time.strftime("depth-live-%Y%m%d-%H%M%S")
        print("[depth-live] no display: writing to %s" % os.path.abspath(out), flush=True)
    recorder = Recorder(out, fps=args.video_fps, save_frames=args.save_frames,
                        jpeg_quality=pipeline.jpeg_quality) if out else None
    return Outputs(Window() if show else None, recorder, pipeline)


def run(args: argparse.Namespace, camera: Any = None) -> int:
    """One live run; ``camera`` (with ``start(on_frame)``, ``stop()``, ``describe()``, ``diagnose()``)
    defaults to the SDK's camera of ``args``."""
    overrides = {"model": args.model, "backend": args.backend, "device": args.device,
                 "input_size": args.input_size, "threads": args.threads}
    try:
        params = load_params(args.config, overrides)
    except ParameterError as exc:
        for problem in exc.problems:
            print("depth-live: %s" % problem, file=sys.stderr)
        return EXIT_PARAMS
    problem = output_problem(args.out, folder=True) if args.out else None
    if problem:  # before the camera and the model
        print("depth-live: %s" % problem, file=sys.stderr)
        return EXIT_PARAMS
    try:  # before the model: a missing SDK is found in a second
        camera = camera or SdkCamera(args.robot, simulated=args.sim, host=args.host, port=args.port,
                                     robot_type=args.robot_type)
    except CameraError as exc:
        print("depth-live: %s" % exc, file=sys.stderr)
        return EXIT_CAMERA
    try:
        options.use_cpu_threads(params["threads"])
        pipeline, health = start_pipeline(params, window=LATENCY_WINDOW)
    except Exception as exc:  # noqa: BLE001 - one line instead of a traceback: the model is the problem
        print("depth-live: cannot run model %s: %s" % (params["model"], error_line(exc)), file=sys.stderr)
        return 1
    loop, outputs = LiveLoop(pipeline, health, args.frames), open_outputs(args, pipeline)
    print("[depth-live] %s on %s (%s, input short side %s); camera: %s" % (
        health.info["model"], health.info["device"], health.info["backend"], health.info["input_size"],
        camera.describe()), flush=True)
    started, stopped, error = loop.clock(), "", None
    try:
        camera.start(loop.on_frame)
        stopped = drive(loop, outputs, args, camera, started)
    except CameraError as exc:
        stopped, error = "camera error", str(exc)
    except KeyboardInterrupt:
        stopped = "interrupted"
    finally:
        loop.stop_accepting()
        camera.stop()
        outputs.show(loop.process_next(timeout=0))  # the frame still waiting, so every frame is accounted
        outputs.close()
    return finish(loop, outputs, camera, loop.clock() - started, stopped, error)


def finish(loop: LiveLoop, outputs: Outputs, camera: Any, seconds: float, stopped: str,
           error: Optional[str]) -> int:
    recorder = outputs.recorder
    report = build_report(loop.health, camera.describe(), seconds, stopped, error,
                          recorder.files() if recorder else None)
    if recorder:
        recorder.write_report(report)
    print(summary(report), flush=True)
    if recorder:
        print("[depth-live] wrote %s" % ", ".join(v for v in recorder.files().values() if v), flush=True)
    if error:
        print("depth-live: %s" % error, file=sys.stderr, flush=True)
        return EXIT_CAMERA
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
