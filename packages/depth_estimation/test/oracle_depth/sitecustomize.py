"""Test-only oracle for the metric rostest: with DEPTH_ORACLE=FILE.npy (a z-depth in metres at the
frame's size, 0 = unknown) in the environment, the network's output is replaced by that depth's
disparity under an unknown scale and shift (a perfect relative model: no trained weights can be
downloaded here). Everything else (the camera stream, decoding, the node's threads, the ground fit
with the robot's calibration, the ROS outputs) runs for real. Put this folder first on PYTHONPATH of
the node under test; without the variable nothing is changed.

With DEPTH_ORACLE_FRAMES=FILE.npz instead (``keys``: the SHA-1 of each frame's RGB as the estimator
receives it, hex; ``depths``: N x H x W z-depth in metres, 0 = unknown), each frame gets its own
depth: a stream of different frames (a simulated drive: its 0 is the sky, answered as far) with a
perfect relative model."""
import os

ORACLE = os.environ.get("DEPTH_ORACLE", "")
ORACLE_FRAMES = os.environ.get("DEPTH_ORACLE_FRAMES", "")
SCALE, SHIFT = 0.37, 0.8  # the unknown affine map of true disparity (1/m), as in tests/test_eval_ground.py


def oracle_disparity(depth, unknown="median"):
    """A model's answer for a true z-depth: its disparity under the unknown scale and shift. Where the
    truth has none (0) a model answers something: the median (a depth camera's holes), or with
    ``unknown="far"`` the farthest (the simulator's 0 is the sky, beyond its maximum depth)."""
    import numpy as np

    depth = depth.astype(np.float64)
    valid = depth > 0
    disparity = np.where(valid, SCALE / np.where(valid, depth, 1.0) + SHIFT, 0.0)
    fill = np.median if unknown == "median" else np.min
    disparity[~valid] = fill(disparity[valid])
    return disparity.astype(np.float32)


if ORACLE:
    import cv2
    import numpy as np

    from depth_estimation.runtime.estimator import DepthEstimator

    _disparity = oracle_disparity(np.load(ORACLE))
    _finish = DepthEstimator.finish

    def _oracle_finish(self, prepared, prediction):
        out = _finish(self, prepared, prediction)  # the real post-processing runs; its values are replaced
        if out.shape != _disparity.shape:  # the start-up warm-up frame
            return out
        return cv2.resize(_disparity, (out.shape[1], out.shape[0]))

    DepthEstimator.finish = _oracle_finish
elif ORACLE_FRAMES:
    import hashlib
    import threading

    import cv2
    import numpy as np

    from depth_estimation.runtime.estimator import DepthEstimator

    with np.load(ORACLE_FRAMES) as _data:
        _by_key = dict(zip((str(k) for k in _data["keys"]), _data["depths"]))
    _pending, _lock = {}, threading.Lock()  # id(prepared) -> the frame's key, from prepare to finish
    _prepare, _finish = DepthEstimator.prepare, DepthEstimator.finish

    def _oracle_prepare(self, rgb):
        prepared = _prepare(self, rgb)
        with _lock:
            _pending[id(prepared)] = hashlib.sha1(np.ascontiguousarray(rgb).tobytes()).hexdigest()
        return prepared

    def _oracle_frame_finish(self, prepared, prediction):
        out = _finish(self, prepared, prediction)
        with _lock:
            depth = _by_key.get(_pending.pop(id(prepared), None))
        if depth is None:  # the start-up warm-up frame
            return out
        return cv2.resize(oracle_disparity(depth, "far"), (out.shape[1], out.shape[0]))

    DepthEstimator.prepare, DepthEstimator.finish = _oracle_prepare, _oracle_frame_finish
