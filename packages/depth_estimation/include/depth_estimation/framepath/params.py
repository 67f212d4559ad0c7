"""The depth node's parameters, checked all at once before anything starts.

``config/depth_node/default.yaml`` is the one source of defaults; :func:`check_params` takes the
values the node read (defaults + launch overrides) and returns them typed, or raises
:class:`ParameterError` listing every bad one (the node prints one FATAL line per problem and
exits non-zero). Nothing here needs ROS.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Tuple

from depth_estimation.framepath.colorize import RANGE_MODES, colormap_names
from depth_estimation.options import BACKENDS, DEVICES


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
    "backend": _one_of(BACKENDS),
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
}


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
    return problems
