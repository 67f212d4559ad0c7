"""The depth node's parameters, checked all at once before anything starts.

``config/depth_node/default.yaml`` is the one source of defaults; :func:`check_params` takes the
values the node read (defaults + launch overrides) and returns them typed, or raises
:class:`ParameterError` listing every bad one (the node prints one FATAL line per problem and
exits non-zero). :func:`robot_overrides` merges a robot's own file (``config/depth_node/<veh>.yaml``)
over the defaults; :data:`RUNTIME` are the parameters that may change while the node runs, checked
by :func:`runtime_update`. Nothing here needs ROS.
"""
from __future__ import annotations

import math
import os
from typing import Any, Callable, Dict, List, Mapping, Tuple

import yaml

from depth_estimation.framepath.colorize import RANGE_MODES, colormap_names
from depth_estimation.geometry.tof import TofPose
from depth_estimation.options import BACKEND_CHOICES, DEVICES


class ParameterError(ValueError):
    """One or more parameters are unusable; ``problems`` holds one line per parameter."""

    def __init__(self, problems: List[str]):
        super().__init__("; ".join(problems))
        self.problems = list(problems)


def _number(value: Any, kind: Callable = float) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("expected a number, got %r" % (value,))
    if kind is int and float(value) != int(value):
        raise ValueError("expected a whole number, got %r" % (value,))
    if not math.isfinite(float(value)):
        raise ValueError("expected a finite number, got %r" % (value,))
    return kind(value)


def _in_range(low: float, high: float = math.inf, kind: Callable = float, low_open: bool = False):
    def check(value: Any) -> Any:
        number = _number(value, kind)
        if number < low or (low_open and number == low) or number > high:
            bounds = "%s%s..%s%s" % ("(" if low_open else "[", low, "inf" if high == math.inf else high, "]")
            raise ValueError("%r is outside %s" % (value, bounds))
        return number
    return check


def _one_of(choices) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if str(value) not in choices:
            raise ValueError("%r; use one of %s" % (value, ", ".join(choices)))
        return str(value)
    return check


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a non-empty text, got %r" % (value,))
    return value.strip()


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("expected true or false, got %r" % (value,))
    return value


def _percentiles(value: Any) -> Tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError("expected [low, high], got %r" % (value,))
    low, high = (_in_range(0.0, 100.0)(v) for v in value)
    if not low < high:
        raise ValueError("expected low < high, got %r" % (value,))
    return low, high


def _frame_size(value: Any) -> Tuple[int, int]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError("expected [width, height], got %r" % (value,))
    return tuple(_in_range(1, 65535, int)(v) for v in value)  # type: ignore[return-value]


CHECKS: Dict[str, Callable[[Any], Any]] = {
    "model": _text,
    "backend": _one_of(BACKEND_CHOICES),
    "device": _one_of(DEVICES),
    "half": _boolean,
    "input_size": _in_range(0, 4096, int),
    "threads": _in_range(0, 1024, int),
    "colormap": lambda v: _one_of(colormap_names())(str(v).lower()),
    "color_range": _one_of(RANGE_MODES),
    "color_percentiles": _percentiles,
    "color_vmin": _number,
    "color_vmax": _number,
    "jpeg_quality": _in_range(1, 100, int),
    "min_side": _in_range(1, 65535, int),
    "max_side": _in_range(1, 65535, int),
    "max_aspect": _in_range(1.0, 1000.0),
    "max_input_pixels": _in_range(14 * 14, 64e6, int),
    "expected_frame_size": _frame_size,
    "diagnostics_period": _in_range(0.0, 3600.0, low_open=True),
    "stall_after": _in_range(0.0, 3600.0, low_open=True),
    "process_frequency": _in_range(0.0, 1000.0),
    "engine_dir": lambda v: "" if v in ("", None) else _text(v),
    "workspace_mb": _in_range(16, 65536, int),
    "tensorrt_fp16": _boolean,
    "pipelined": _boolean,
    # metric depth from the robot's ground-plane calibration (framepath.metric)
    "metric": _boolean,
    "extrinsics_file": lambda v: "" if v in ("", None) else _text(v),
    "metric_time_constant": _in_range(0.0, 60.0),
    "metric_hold": _in_range(0.0, 60.0),
    "metric_min_inlier_share": _in_range(0.0, 1.0),
    "metric_max_range": _in_range(0.0, 1000.0, low_open=True),
    "obstacle_min_height": _in_range(0.0, 10.0),
    "obstacle_max_height": _in_range(0.0, 10.0, low_open=True),
    "obstacle_max_range": _in_range(0.0, 1000.0, low_open=True),
    "corridor_width": _in_range(0.0, 10.0, low_open=True),
    "scan_bins": _in_range(2, 100000, int),
    "scan_fov_deg": _in_range(0.0, 359.0, low_open=True),
    "points": _boolean,
    "points_step": _in_range(1, 256, int),
    "ground_frame": _text,
    # the front time-of-flight cross-check of the metric depth (framepath.tof_check)
    "tof_topic": lambda v: "" if v in ("", None) else _text(v),
    "tof_pose": lambda v: list(TofPose.from_list(v).__dict__.values()),
    "tof_time_constant": _in_range(0.0, 60.0, low_open=True),
    "tof_tolerance": _in_range(0.0, 10.0, low_open=True),
    "virtual_stop_line_offset": _in_range(0.0, 1000.0),
}

# Safe to change while the node runs (read again about twice a second); the others need a restart.
RUNTIME = ("colormap", "color_range", "color_percentiles", "color_vmin", "color_vmax", "jpeg_quality",
           "process_frequency")


def check_params(raw: Dict[str, Any]) -> Dict[str, Any]:
    """Every parameter of :data:`CHECKS` from ``raw``, typed; ParameterError naming each bad one."""
    params, problems = {}, []
    for name, check in CHECKS.items():
        if name not in raw:
            problems.append("parameter ~%s is missing (config/depth_node/default.yaml sets it)" % name)
            continue
        try:
            params[name] = check(raw[name])
        except ValueError as exc:
            problems.append("parameter ~%s: %s" % (name, exc))
    problems += _relations(params)
    if problems:
        raise ParameterError(problems)
    return params


def _relations(params: Dict[str, Any]) -> List[str]:
    problems = []
    if "min_side" in params and "max_side" in params and params["min_side"] > params["max_side"]:
        problems.append("parameter ~min_side %d is above ~max_side %d"
                        % (params["min_side"], params["max_side"]))
    if params.get("color_range") == "fixed" and "color_vmin" in params and "color_vmax" in params \
            and not params["color_vmin"] < params["color_vmax"]:
        problems.append("parameter ~color_vmin %g must be below ~color_vmax %g with color_range fixed"
                        % (params["color_vmin"], params["color_vmax"]))
    if "obstacle_min_height" in params and "obstacle_max_height" in params \
            and not params["obstacle_min_height"] < params["obstacle_max_height"]:
        problems.append("parameter ~obstacle_min_height %g must be below ~obstacle_max_height %g"
                        % (params["obstacle_min_height"], params["obstacle_max_height"]))
    return problems


def runtime_update(params: Mapping[str, Any], raw: Mapping[str, Any]) -> Tuple[Dict[str, Any], List[str]]:
    """``(changes, problems)`` for new values of run-time parameters: the ones in ``raw`` whose checked
    value differs from ``params`` (the node's typed parameters), and one line for each parameter that
    cannot take its new value (bad alone or with the others, or not a run-time parameter). A bad
    value never holds back the good ones."""
    problems = ["parameter ~%s cannot change at run time (restart the node)" % name
                for name in sorted(set(raw) - set(RUNTIME))]
    wanted = {name: raw[name] for name in RUNTIME if name in raw}
    try:
        merged = check_params(dict(params, **wanted))  # together: color_vmin/vmax may move at once
    except ParameterError:
        merged = dict(params)
        for name, value in wanted.items():  # one at a time: each valid one is taken
            try:
                merged = check_params(dict(merged, **{name: value}))
            except ParameterError as exc:
                problems += exc.problems
    return {name: merged[name] for name in RUNTIME if merged[name] != params[name]}, problems


def read_param_file(path: str) -> Dict[str, Any]:
    """A parameter file (YAML mapping of name -> value); ParameterError when it cannot be used."""
    try:
        with open(path) as f:
            values = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as exc:
        raise ParameterError(["%s: %s" % (path, " ".join(str(exc).split()))]) from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ParameterError(["%s: expected name: value lines, got %s" % (path, type(values).__name__)])
    return values


CONFIG_DIR_ENV = "DEPTH_NODE_CONFIG_DIR"  # where <veh>.yaml is looked for (default: the package's config)


def robot_file_values(config_dir: str, veh: str, given: Mapping[str, Any]) -> Tuple[Dict[str, Any], str]:
    """``(values to set, the log line)`` for robot ``veh``'s own file (``<$DEPTH_NODE_CONFIG_DIR or
    config_dir>/<veh>.yaml``) over ``config_dir``'s default.yaml, ``given`` holding what the launch gave
    the node; ({}, "") without such a file. The values to set hold the launch's value for each name it
    gave: on DTROS the base class has already set the robot's value of every key of that file by then
    (dt-ros-commons daffy, dtros.py ``DTROS.__init__``), so the launch's is put back."""
    path = os.path.join(os.environ.get(CONFIG_DIR_ENV) or config_dir, "%s.yaml" % veh)
    if not veh or not os.path.isfile(path):
        return {}, ""
    robot = read_param_file(path)
    changes, kept = robot_overrides(given, read_param_file(os.path.join(config_dir, "default.yaml")), robot,
                                    source=path)
    line = "%s sets %s%s" % (path, ", ".join(sorted(changes)) or "nothing new",
                             "; kept the explicitly given %s" % ", ".join(kept) if kept else "")
    return dict(changes, **{name: given[name] for name in kept}), line


def robot_overrides(current: Mapping[str, Any], defaults: Mapping[str, Any], robot: Mapping[str, Any],
                    source: str = "robot file") -> Tuple[Dict[str, Any], List[str]]:
    """``(values to set, names kept)`` for a robot's own parameter file over ``default.yaml``.

    ``current`` holds what the node was given (the parameter server), ``defaults`` default.yaml.
    A robot value replaces a parameter that still has its default; one that was given explicitly (a
    launch argument such as ``model:=``, another ``param_file_name``, ``_name:=``) and so differs from
    default.yaml is kept. An unknown name in the robot file is an error (a typo would go unnoticed)."""
    unknown = sorted(set(robot) - set(CHECKS))
    if unknown:
        raise ParameterError(["%s: unknown parameter ~%s" % (source, name) for name in unknown])
    changes, kept = {}, []
    for name, value in robot.items():
        if name in current and name in defaults and current[name] != defaults[name]:
            if current[name] != value:
                kept.append(name)
        else:
            changes[name] = value
    return changes, sorted(kept)
