"""Reading calibration files: one clear error per bad file (:class:`CalibrationError`).

Real fleet files have been seen with git merge-conflict markers in them (a calibration committed
on two branches); those, non-YAML text and YAML that is not a mapping are each one line naming the
file and what to do.
"""
from __future__ import annotations

import os
from typing import Any, Dict

import yaml

CONFLICT_MARKERS = ("<<<<<<<", "=======", ">>>>>>>")


class CalibrationError(ValueError):
    """A calibration file or message that cannot be used; the message names it and the problem."""


def check_file(path: str, what: str) -> str:
    """``path`` with ``~`` expanded; CalibrationError naming it when it is not a file."""
    expanded = os.path.expanduser(path)
    if not os.path.isfile(expanded):
        raise CalibrationError("%s: no such %s file" % (path, what))
    return expanded


def read_yaml_mapping(path: str, what: str) -> Dict[str, Any]:
    """The YAML mapping in ``path`` (a ``what`` file); CalibrationError naming the file when it is
    missing, unreadable, holds git merge-conflict markers, is not YAML or not a mapping."""
    expanded = check_file(path, what)
    try:
        with open(expanded, "r") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise CalibrationError("%s: cannot read the %s file (%s)" % (path, what, exc)) from None
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith(CONFLICT_MARKERS[0]) or line.startswith(CONFLICT_MARKERS[2]) or \
                line.rstrip() == CONFLICT_MARKERS[1]:
            raise CalibrationError("%s: git merge-conflict marker %r at line %d; resolve the conflict "
                                   "(keep one calibration) or calibrate again"
                                   % (path, line.strip()[:7], number))
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = " at line %d" % (mark.line + 1) if mark is not None else ""
        raise CalibrationError("%s: not YAML%s (%s)" % (path, where, getattr(exc, "problem", None) or exc)) \
            from None
    if not isinstance(data, dict):
        raise CalibrationError("%s: the %s file holds %s, not a YAML mapping"
                               % (path, what, "nothing" if data is None else type(data).__name__))
    return data
