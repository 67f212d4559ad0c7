"""``make demo``: the depth node on a real camera recording, as it runs on the robot.

Starts its own roscore on a free port, replays a real camera recording (re-stamped into a
camera-rate stream under the Duckiebot topic names) with ``rosbag play --clock``, runs
``depth_node.launch`` with the embedded defaults of ``config/depth_node/default.yaml``, saves
the colorized depth as PNG with image_view's ``image_saver``, records the node's outputs, and
writes a latency report (JSON + a printed table). Everything is shut down at the end. Before the
node starts, the model alone (the node's backend and input size, on a frame of the recording) is
timed in this process, and the report puts its rate next to the node's output rate
(``output_vs_bare``); this also exports the ONNX file of the recording's frame size once, so that
the node does not export it in the middle of the stream.

``--sim``: a simulated drive on a Duckietown test map instead (:mod:`depth_estimation.tools.demo_sim`),
with ``metric:=true`` and the simulated robot's calibration; the report adds the comparison with
the simulator's ground truth and the montage shows camera | metric depth | ground truth.

Model: the default spec (``da2-small``) with real weights from the local cache when present,
fetched once when the hub is reachable, else the student shipped with the package
(``fastdepth-duckietown``, trained in the Duckietown simulator), and then, unless ``--bag`` names a
recording, on the simulated drive (``--sim``) when the simulator is installed: a new user's first
demo shows real depth, metres and obstacle distances against the ground truth. Only when the
student's folder is missing too: ``random:da2-small`` behind a loud banner.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import yaml

from depth_estimation import options
from depth_estimation.io import bags
from depth_estimation.io.atomic import write_json
from depth_estimation.io.paths import ASSETS_DIR, PACKAGE_DIR
from depth_estimation.models import hub
from depth_estimation.tools import demo_sim, demo_speed
from depth_estimation.models.specs import ModelNotFound, parse_spec

DEFAULT_CONFIG = os.path.join(PACKAGE_DIR, "config", "depth_node", "default.yaml")
DEFAULT_BAG = os.path.join(ASSETS_DIR, "recordings", "raspicam_aruco_marker.bag")
IMAGE_SAVER = "/usr/lib/image_view/image_saver"
STUDENT = "fastdepth-duckietown"  # shipped with the package: the model when no other weights are here


def node_defaults() -> Dict:
    with open(DEFAULT_CONFIG) as f:
        return yaml.safe_load(f)


def choose_model(requested: Optional[str]) -> str:
    """The requested spec, or the default one with the weights-or-random fallback."""
    if requested:
        return requested
    spec = parse_spec(str(node_defaults()["model"]))
    if spec.hub_id is None or hub.cached_dir(spec.hub_id):
        return spec.text
    try:
        print("[demo] %s weights not cached; trying to fetch %s once ..." % (spec.text, spec.hub_id))
        hub.fetch(spec.hub_id)
        return spec.text
    except Exception as exc:  # no network here is the normal case
        try:
            parse_spec(STUDENT)  # its folder is complete
        except ModelNotFound as missing:
            fallback = "random:" + (spec.arch or "da2-small")
            line = "NO WEIGHTS for %s (%s) and %s: running %s, UNTRAINED - the depth below is meaningless" % (
                spec.text, type(exc).__name__, missing, fallback)
            print("\n" + "!" * len(line) + "\n" + line + "\n" + "!" * len(line) + "\n", flush=True)
            return fallback
        print("[demo] no weights for %s (%s): running %s, the student shipped with the package (trained in "
              "the Duckietown simulator only)" % (spec.text, type(exc).__name__, STUDENT), flush=True)
        return STUDENT


def wants_sim(args: argparse.Namespace, model: str) -> bool:
    """``--sim``, or the shipped student chosen for want of other weights with no ``--bag`` given
    (it was trained in the simulator: its drive shows what it does, with the ground truth)."""
    if args.sim or args.model or args.bag or model != STUDENT or not simulator_installed():
        return bool(args.sim)
    print("[demo] %s was trained in the Duckietown simulator: showing it on a simulated drive "
          "(--bag %s for the real recording)" % (STUDENT, os.path.relpath(DEFAULT_BAG)), flush=True)
    return True


def simulator_installed() -> bool:
    """The simulated drive can run: the simulator is installed and there is a display or Xvfb."""
    return (importlib.util.find_spec("gym_duckietown") is not None
            and bool(os.environ.get("DISPLAY") or shutil.which("Xvfb")))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError("roscore did not come up on port %d" % port)


class Processes:
    """Child processes, each in its own session (process group), stopped with SIGINT (like Ctrl-C):
    the ones named in ``first`` first, the rest in reverse order of start. A group is only killed
    when all of it, children included, is still there after ``grace`` seconds: ``rosbag record``'s
    C++ recorder must finish writing the bag index after its Python parent has exited."""

    def __init__(self, env: Dict[str, str], log_dir: str):
        self.env, self.log_dir, self.procs = env, log_dir, []

    def start(self, name: str, cmd: List[str]) -> subprocess.Popen:
        log = open(os.path.join(self.log_dir, name + ".log"), "w")
        proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append((name, proc, log))
        return proc

    def stop_all(self, first: Tuple[str, ...] = (), grace: float = 20.0) -> None:
        order = sorted(reversed(self.procs), key=lambda item: item[0] not in first)
        for _name, proc, _log in order:
            _signal_group(proc.pid, signal.SIGINT)
            if not _wait_group(proc.pid, grace):
                _signal_group(proc.pid, signal.SIGKILL)  # stragglers that ignored SIGINT
            proc.wait()
        for _name, _proc, log in self.procs:
            log.close()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _wait_group(pgid: int, timeout: float) -> bool:
    """Wait until no process of group ``pgid`` is left (zombies of our own child reaped); True if so."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.waitpid(pgid, os.WNOHANG)  # reap the group leader (our child) once it exits
        except ChildProcessError:
            pass
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def percentiles(values: List[float]) -> Dict[str, Optional[float]]:
    if not values:
        return {"p50": None, "p95": None, "max": None}
    arr = np.asarray(values)
    return {"p50": float(np.percentile(arr, 50)), "p95": float(np.percentile(arr, 95)),
            "max": float(arr.max())}


def report_from_bag(path: str, veh: str, model: str, frames_sent: int, rate: float,
                    stream_end: float) -> Dict:
    """Latency report from the recorded outputs: per-frame age and the node's last diagnostics
    (rates from the last report while the camera was still streaming, counts from the final one)."""
    depth_topic = "/%s/depth_node/depth/camera_info" % veh  # one per depth frame, stamped like it
    ages, diag, rates = [], {}, {}
    level = message = None
    for topic, t, msg in bags.iter_messages(path, [depth_topic, "/diagnostics"]):
        if topic == depth_topic:
            ages.append((t - (msg.header.stamp.sec + msg.header.stamp.nanosec / 1e9)) * 1000.0)
            continue
        for status in msg.status:
            if "depth_node" in status.name:
                diag = {kv.key: kv.value for kv in status.values}
                if t <= stream_end:
                    rates = {k: diag[k] for k in ("input_hz", "output_hz")}
                    level, message = int(status.level), status.message
    diag.update(rates)
    return {"model": model, "camera_rate_hz": rate, "frames_sent": frames_sent, "depth_frames": len(ages),
            "end_to_end_ms_recorded": percentiles(ages), "diagnostics": diag,
            "diagnostics_level": level, "diagnostics_message": message}


def write_montage(camera_jpeg: bytes, depth_png: str, model: str, out: str, width: int = 640) -> None:
    """Camera frame | colorized depth, side by side, labelled: what rqt_image_view shows."""
    import cv2  # only for the montage

    from depth_estimation.framepath.frames import decode  # only for the montage

    tiles = [demo_sim.labelled_tile(image, label, width) for image, label in
             ((decode(camera_jpeg), "camera"), (cv2.imread(depth_png), "depth: " + model))]
    cv2.imwrite(out, np.hstack(tiles))


def print_table(report: Dict) -> None:
    d = report["diagnostics"]
    random_weights = "  (RANDOM WEIGHTS)" if report["model"].startswith("random:") else ""
    rows = [("model", report["model"] + random_weights),
            ("device / input short side", "%s / %s" % (d.get("device"), d.get("input_size"))),
            ("frames sent / in / out",
             "%d / %s / %s" % (report["frames_sent"], d.get("frames_in"), d.get("frames_out"))),
            ("frames dropped / rejected / missed", "%s / %s / %s" % (
                d.get("frames_dropped"), d.get("frames_rejected"), d.get("frames_missed"))),
            ("input / output rate (Hz)", "%s / %s" % (d.get("input_hz"), d.get("output_hz")))]
    rows += [row for row in [demo_speed.table_row(report)] if row]
    for key in ("decode", "preprocess", "inference", "postprocess", "colorize", "encode", "end_to_end"):
        p50 = d.get(key + "_ms_p50")
        rows.append(("%s ms p50 / p95" % key, "n/a (no subscriber)" if p50 == "nan" else
                     "%s / %s" % (p50, d.get(key + "_ms_p95", "-"))))
    width = max(len(r[0]) for r in rows)
    print("\nLatency report (%s)" % report["diagnostics_message"])
    for name, value in rows:
        print("  %-*s  %s" % (width, name, value))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python3 -m depth_estimation.tools.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bag", help="camera recording (CompressedImage frames; default: the real "
                        "recording in assets/recordings, or the simulated drive for the shipped student)")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the replayed stream")
    parser.add_argument("--rate", type=float, default=30.0, help="camera rate of the replay (Hz)")
    parser.add_argument("--veh", default="duckiebot", help="robot name (topic namespace)")
    options.add_model(parser, required=False,
                      help=options.MODEL_HELP + " (default: the node's default, see above)")
    parser.add_argument("--backend", choices=options.BACKEND_CHOICES,
                        help="the node's backend (default: the node's default, auto)")
    parser.add_argument("--out", default=os.path.join(os.getcwd(), "demo_output"), help="output folder")
    parser.add_argument("--sim", action="store_true",
                        help="a simulated drive (Duckietown's simulator, test map %s) with metric:=true and "
                             "the simulated robot's calibration, compared with its ground truth"
                             % demo_sim.SIM_MAP)
    return parser


def _fresh_output(out: str) -> Tuple[str, str, str]:
    """The output folder with an empty ``colorized/``, a ``logs/`` and no previous recording;
    returns the PNG folder, the log folder and the path of the outputs bag."""
    png_dir, log_dir = os.path.join(out, "colorized"), os.path.join(out, "logs")
    if os.path.isdir(png_dir):
        shutil.rmtree(png_dir)  # the previous demo's frames; this folder belongs to the demo
    os.makedirs(png_dir)
    os.makedirs(log_dir, exist_ok=True)
    outputs = os.path.join(out, "outputs.bag")
    for stale in (outputs, outputs + ".active"):  # never report on a previous run's recording
        if os.path.exists(stale):
            os.remove(stale)
    return png_dir, log_dir, outputs


def run_ros(args: argparse.Namespace, model: str, stream: str, png_dir: str, log_dir: str,
            outputs: str, node_args: Sequence[str] = (), record: Sequence[str] = ()) -> int:
    """roscore, the node (with ``node_args``), image_saver, rosbag record (plus the ``record`` topics)
    and the replay of ``stream``; stops them all. Returns 0 once the replay has finished, 1 when the
    node died during it."""
    port = free_port()
    env = dict(os.environ, ROS_MASTER_URI="http://127.0.0.1:%d" % port, ROS_IP="127.0.0.1")
    env.pop("ROS_HOSTNAME", None)
    procs = Processes(env, log_dir)
    ns = "/%s/depth_node" % args.veh
    try:
        procs.start("roscore", ["roscore", "-p", str(port)])
        wait_for_port(port)
        subprocess.run(["rosparam", "set", "/use_sim_time", "true"], env=env, check=True, timeout=30)
        node = procs.start("depth_node", ["roslaunch", "depth_estimation", "depth_node.launch",
                                          "veh:=" + args.veh, "model:=" + model, "required:=true"]
                           + own_input_size(model) + list(node_args)
                           + (["backend:=" + args.backend] if args.backend else []))
        procs.start("image_saver", [IMAGE_SAVER, "image:=%s/depth/colorized" % ns,
                                    "_filename_format:=%s/depth_%%04i.png" % png_dir,
                                    "__name:=demo_image_saver"])
        # small topics only (a 32FC1 frame is MBs): the bag closes at once on Ctrl-C
        procs.start("record", ["rosbag", "record", "-O", outputs, ns + "/depth/camera_info", "/diagnostics",
                               bags.END_TOPIC] + list(record))
        print("[demo] waiting for depth_node to load %s (log: %s)"
              % (model, os.path.join(log_dir, "depth_node.log")), flush=True)
        # -d 2: give subscriber connections time to settle, or the first frames are lost uncounted
        player = procs.start("camera", ["rosbag", "play", "--clock", "--wait-for-subscribers", "-d", "2",
                                        stream])
        while player.poll() is None:
            if node.poll() is not None:
                with open(os.path.join(log_dir, "depth_node.log")) as f:
                    fatal = [line.strip() for line in f if "FATAL" in line or "Error" in line]
                print("error: depth_node exited: %s" % (fatal[-1] if fatal else "see its log"),
                      file=sys.stderr)
                return 1
            time.sleep(0.2)
    finally:
        # the node first: the saver and the recorder then have everything it published
        procs.stop_all(first=("camera", "depth_node"))
    return 0


def own_input_size(model: str) -> List[str]:
    """``input_size:=0`` (the model's own) for a model that is not Depth-Anything-V2: the embedded
    default (308) is a Depth-Anything-V2 size, and the student is trained at 192."""
    return [] if parse_spec(model).family == "da2" else ["input_size:=0"]


def finish_recording(outputs: str, log_dir: str) -> bool:
    """True when ``outputs`` is a complete bag; an unindexed ``.active`` one is reindexed first."""
    active = outputs + ".active"
    if not os.path.exists(outputs) and os.path.exists(active):
        with open(os.path.join(log_dir, "reindex.log"), "w") as log:
            done = subprocess.run(["rosbag", "reindex", active], stdout=log, stderr=subprocess.STDOUT)
        if done.returncode == 0:
            os.replace(active, outputs)
    return os.path.exists(outputs)


def tidy_saver_files(png_dir: str, out: str) -> List[str]:
    """The PNGs image_saver wrote, sorted; its camera_info ``.ini`` files go to ``out/camera_info``."""
    for name in sorted(os.listdir(png_dir)):
        if name.endswith(".ini"):
            os.makedirs(os.path.join(out, "camera_info"), exist_ok=True)
            os.replace(os.path.join(png_dir, name), os.path.join(out, "camera_info", name))
    return sorted(f for f in os.listdir(png_dir) if f.endswith(".png"))


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    model = choose_model(args.model)
    try:
        parse_spec(model)
    except (ValueError, ModelNotFound) as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 2
    args.sim = wants_sim(args, model)
    out = os.path.abspath(args.out)
    png_dir, log_dir, outputs = _fresh_output(out)
    work = tempfile.mkdtemp(prefix="depth_demo_")
    try:
        return _run(args, model, out, work, (png_dir, log_dir, outputs))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(args: argparse.Namespace, model: str, out: str, work: str, paths: Tuple[str, str, str]) -> int:
    png_dir, log_dir, outputs = paths
    sim_bag = node_args = None
    if args.sim:
        sim_bag, extrinsics = demo_sim.render_drive(work, args.veh, args.seconds, args.rate)
        node_args = demo_sim.node_arguments(extrinsics)
    source = sim_bag or args.bag or DEFAULT_BAG
    frames = bags.read_camera_frames(source)
    if not frames:
        print("error: %s has no sensor_msgs/CompressedImage frames" % source, file=sys.stderr)
        return 2
    print("[demo] timing %s alone (the node's backend and input size) ..." % model, flush=True)
    params = dict(node_defaults(), model=model, **({"input_size": 0} if own_input_size(model) else {}))
    bare = demo_speed.bare_rate(dict(params, backend=args.backend or params["backend"]), frames[0].data)
    stream = os.path.join(work, "camera.bag")
    count = int(args.seconds * args.rate)
    stamps = bags.camera_stream_bag(frames, stream, veh=args.veh, count=count, rate=args.rate, tail=3.0)
    print("[demo] %d %s frame(s) from %s -> %.0f s at %.0f Hz on /%s/camera_node/image/compressed"
          % (len(frames), "simulated" if sim_bag else "real", os.path.relpath(source), args.seconds,
             args.rate, args.veh), flush=True)
    if run_ros(args, model, stream, png_dir, log_dir, outputs, node_args or (),
               demo_sim.recorded_topics(args.veh) if sim_bag else ()):
        return 1
    if not finish_recording(outputs, log_dir):
        print("error: the recording of the node's outputs did not finish (%s)"
              % os.path.join(log_dir, "record.log"), file=sys.stderr)
        return 1
    report = report_from_bag(outputs, args.veh, model, count, args.rate, stamps[-1] / 1e9)
    pngs = tidy_saver_files(png_dir, out)
    # image_saver and the recorder subscribe apart (queue 1 each): they may differ by a frame at the edges
    report["colorized_pngs"] = len(pngs)
    montage = os.path.join(out, "montage.png")
    if sim_bag:
        report["ground_truth"], frame = demo_sim.compare(outputs, sim_bag, args.veh)
        demo_sim.write_montage(sim_bag, args.veh, frame, model, montage)
    elif pngs:
        write_montage(frames[0].data, os.path.join(png_dir, pngs[-1]), model, montage)
    demo_speed.add_to_report(report, bare)
    write_json(os.path.join(out, "latency_report.json"), report)
    print_table(report)
    if sim_bag:
        demo_sim.print_comparison(report["ground_truth"])
    print("\n[demo] %d colorized depth PNGs in %s; report %s"
          % (report["colorized_pngs"], png_dir, os.path.join(out, "latency_report.json")))
    return 0 if report["depth_frames"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
