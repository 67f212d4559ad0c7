"""depth-sim-drive's report: each run's record, the summary over runs, the printed lines and the video
(camera | metric depth, with the virtual stop line and the obstacle distance drawn on both)."""
from __future__ import annotations

import math
import statistics
from typing import Any, Dict, List, Optional

import cv2
import numpy as np

from depth_estimation.framepath.colorize import Colorizer
from depth_estimation.io.atomic import atomic_path, write_json


class RunRecord:
    """What one run measures, filled frame by frame (only from the run itself)."""

    def __init__(self, run: int, offset_m: float, false_margin_m: float, obstacle: str = "duckie"):
        self.run, self.offset_m, self.margin_m, self.obstacle = run, offset_m, false_margin_m, obstacle
        self.frames, self.wall_s, self.states = 0, 0.0, {}
        self.driven_m, self.clear_m, self.false_stops, self.stops = 0.0, 0.0, 0, 0
        self.first_detected_m: Optional[float] = None
        self.stop_truths: List[Optional[float]] = []  # the true distance at each stop (None: nothing ahead)

    def frame(self, wall_s: float, out: Any, truth_m: float) -> None:
        self.frames, self.wall_s = self.frames + 1, self.wall_s + wall_s
        state = out.frame.state if out is not None else "NO_OUTPUT"
        self.states[state] = self.states.get(state, 0) + 1
        if out is not None and out.stop_line is not None and out.stop_line.detected \
                and self.first_detected_m is None and math.isfinite(truth_m):
            self.first_detected_m = truth_m

    def near(self, truth_m: float) -> bool:
        """Is an obstacle truly within ``offset + margin``? (else a stop there is a false stop)"""
        return math.isfinite(truth_m) and truth_m <= self.offset_m + self.margin_m

    def stop(self, truth_m: float) -> None:
        self.stops += 1
        self.stop_truths.append(round(truth_m, 4) if math.isfinite(truth_m) else None)
        self.false_stops += int(not self.near(truth_m))

    def moved(self, metres: float, truth_m: float) -> None:
        self.driven_m += metres
        self.clear_m += metres if not math.isfinite(truth_m) else 0.0

    def finish(self, outcome: str, truth_m: float, t: float) -> Dict[str, Any]:
        stop_m = truth_m if outcome == "stopped" and math.isfinite(truth_m) else None
        return {"run": self.run, "obstacle": self.obstacle, "outcome": outcome,
                "sim_seconds": round(t, 3), "frames": self.frames,
                "rate_hz": self.frames / t if t > 0 else None,
                "wall_ms_mean": 1e3 * self.wall_s / max(1, self.frames), "stop_distance_m": stop_m,
                "stop_distance_error_m": None if stop_m is None else stop_m - self.offset_m,
                "offset_m": self.offset_m, "stops": self.stops, "false_stops": self.false_stops,
                "driven_m": round(self.driven_m, 4), "clear_lane_m": round(self.clear_m, 4),
                "first_detected_at_m": self.first_detected_m, "stops_at_true_m": self.stop_truths,
                "metric_states": self.states}


def build(args: Dict[str, Any], runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The JSON report: the arguments, every run and the summary computed from them. An approach is a
    run with an obstacle placed (``--obstacle none`` runs drive a clear lane: they count for the false
    stops and the clear-lane metres only)."""
    approaches = [r for r in runs if r.get("obstacle") != "none"]
    stopped = [r for r in approaches if r["outcome"] == "stopped"]
    errors = [r["stop_distance_error_m"] for r in stopped]
    clear = sum(r["clear_lane_m"] for r in runs)
    false = sum(r["false_stops"] for r in runs)
    frames, seconds = sum(r["frames"] for r in runs), sum(r["sim_seconds"] for r in runs)
    summary = {"approaches": len(approaches), "stopped_before_contact": len(stopped),
               "stopped_share": len(stopped) / len(approaches) if approaches else None,
               "contacts": sum(r["outcome"] == "contact" for r in runs),
               "timeouts": sum(r["outcome"] == "timeout" for r in runs),
               "stop_distance_error_m_median": statistics.median(errors) if errors else None,
               "stop_distance_within_5cm": sum(abs(e) <= 0.05 for e in errors),
               "false_stops": false, "clear_lane_m": clear,
               "false_stops_per_100m": 100.0 * false / clear if clear > 0 else None,
               "rate_hz": frames / seconds if seconds > 0 else None}
    return {"args": args, "runs": runs, "summary": summary}


def _num(value: Any, fmt: str) -> str:
    return "n/a" if value is None else fmt % value


def run_line(r: Dict[str, Any]) -> str:
    return ("run %d: %s after %.1f s (%d frames, %s Hz); stop at %s m (offset %.2f); false stops %d; "
            "clear lane %.2f m" % (r["run"], r["outcome"], r["sim_seconds"], r["frames"],
                                   _num(r["rate_hz"], "%.1f"), _num(r["stop_distance_m"], "%.3f"),
                                   r["offset_m"], r["false_stops"], r["clear_lane_m"]))


def summary_text(result: Dict[str, Any]) -> str:
    s = result["summary"]
    return ("%d approaches: %d stopped before contact, %d contacts, %d timeouts; stop distance error "
            "median %s m (%d within 5 cm); %d false stops on %.1f m of clear lane (%s per 100 m); node rate "
            "%s Hz" % (s["approaches"], s["stopped_before_contact"], s["contacts"], s["timeouts"],
                       _num(s["stop_distance_error_m_median"], "%+.3f"), s["stop_distance_within_5cm"],
                       s["false_stops"], s["clear_lane_m"], _num(s["false_stops_per_100m"], "%.1f"),
                       _num(s["rate_hz"], "%.1f")))


def write(path: str, result: Dict[str, Any]) -> None:
    write_json(path, result, indent=1)


def ground_row(intrinsics: Any, plane: Any, distance_m: float, half_width_m: float):
    """Pixel end points of the line ``distance_m`` ahead across the corridor (None when not in view)."""
    R, t = plane.R_ground_from_camera, plane.t
    points = []
    for y in (-half_width_m, half_width_m):
        cam = R.T @ (np.array([distance_m, y, 0.0]) - t)
        if cam[2] <= 1e-3:
            return None
        points.append((int(round(intrinsics.fx * cam[0] / cam[2] + intrinsics.cx)),
                       int(round(intrinsics.fy * cam[1] / cam[2] + intrinsics.cy))))
    return points


class VideoWriter:
    """camera | metric depth side by side, the stop line (offset) in red, the reading in yellow."""

    def __init__(self, path: str, fps: float = 10.0):
        self.path, self.fps, self.writer, self.colorizer = path, fps, None, Colorizer()
        self._atomic = atomic_path(path)
        self._tmp = self._atomic.__enter__()

    def write(self, rgb, out, reading, truth_m, intrinsics, plane, offset_m, t) -> None:
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        depth = out.frame.depth_m if out is not None and out.frame.depth_m is not None else None
        right = self.colorizer(np.nan_to_num(1.0 / np.maximum(depth, 1e-3), nan=0.0)) if depth is not None \
            else np.zeros_like(bgr)
        for image in (bgr, right):
            for dist, color in ((offset_m, (0, 0, 255)), (reading.distance_m if reading is not None
                                                          and reading.detected else None, (0, 255, 255))):
                ends = ground_row(intrinsics, plane, dist, 0.1) if dist else None
                if ends is not None:
                    cv2.line(image, ends[0], ends[1], color, 2)
        text = "t %.1f s  truth %s m  reading %s  state %s" % (
            t, _num(truth_m if math.isfinite(truth_m) else None, "%.2f"),
            "none" if reading is None else ("at line" if reading.at_stop_line else _num(
                reading.distance_m if reading.detected else None, "%.2f m")),
            out.frame.state if out is not None else "-")
        frame = np.concatenate([bgr, right], axis=1)
        cv2.putText(frame, text, (5, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
        if self.writer is None:
            self.writer = cv2.VideoWriter(self._tmp, cv2.VideoWriter_fourcc(*"mp4v"), self.fps,
                                          (frame.shape[1], frame.shape[0]))
        self.writer.write(frame)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
        self._atomic.__exit__(None, None, None)
