"""CPU threads that do not fight (issue 21): OpenMP waits passively unless the user says otherwise,
set before torch loads; a pipelined frame stream keeps OpenCV to one thread per stage."""
import os
import subprocess
import sys

import cv2

from depth_estimation.framepath import stream as stream_module
from depth_estimation.framepath.health import NodeHealth
from depth_estimation.framepath.stream import FrameStream
from depth_estimation.runtime.timing import StageTimer

PROBE = "import depth_estimation, os, sys; print(os.environ.get('OMP_WAIT_POLICY')); print('torch' in sys.modules)"


def probe(**env):
    clean = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    clean.update(env)
    out = subprocess.run([sys.executable, "-c", PROBE], env=clean, stdout=subprocess.PIPE, check=True,
                         universal_newlines=True).stdout.split()
    return out


def test_importing_the_package_sets_passive_openmp_waiting_before_torch_loads():
    assert probe() == ["PASSIVE", "False"]  # set, and torch not loaded yet: it reads it when it loads
    assert probe(OMP_WAIT_POLICY="ACTIVE") == ["ACTIVE", "False"]  # the user's choice wins


def test_a_pipelined_stream_runs_opencv_single_threaded_and_a_serial_one_leaves_it(monkeypatch):
    before = cv2.getNumThreads()
    try:
        cv2.setNumThreads(max(2, before))
        serial = FrameStream(None, NodeHealth(StageTimer(), {}), lambda *a: None, pipelined=False).start()
        serial.close()
        assert cv2.getNumThreads() == max(2, before)
        stream = FrameStream(None, NodeHealth(StageTimer(), {}), lambda *a: None).start()
        stream.close()
        assert cv2.getNumThreads() == stream_module.CV_THREADS == 1
    finally:
        cv2.setNumThreads(before)
