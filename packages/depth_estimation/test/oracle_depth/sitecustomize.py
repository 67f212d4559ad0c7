"""Test-only oracle for the metric rostest: with DEPTH_ORACLE=FILE.npy (a z-depth in metres at the
frame's size, 0 = unknown) in the environment, the network's output is replaced by that depth's
disparity under an unknown scale and shift (a perfect relative model: no trained weights can be
downloaded here). Everything else (the camera stream, decoding, the node's threads, the ground fit
with the robot's calibration, the ROS outputs) runs for real. Put this folder first on PYTHONPATH of
the node under test; without the variable nothing is changed."""
import os

ORACLE = os.environ.get("DEPTH_ORACLE", "")
SCALE, SHIFT = 0.37, 0.8  # the unknown affine map of true disparity (1/m), as in tests/test_eval_ground.py

if ORACLE:
    import cv2
    import numpy as np

    from depth_estimation.runtime.estimator import DepthEstimator

    _depth = np.load(ORACLE).astype(np.float64)
    _valid = _depth > 0
    _disparity = np.where(_valid, SCALE / np.where(_valid, _depth, 1.0) + SHIFT, 0.0)
    _disparity[~_valid] = np.median(_disparity[_valid])  # a model answers something where the truth has none
    _finish = DepthEstimator.finish

    def _oracle_finish(self, prepared, prediction):
        out = _finish(self, prepared, prediction)  # the real post-processing runs; its values are replaced
        if out.shape != _disparity.shape:  # the start-up warm-up frame
            return out
        return cv2.resize(_disparity.astype(np.float32), (out.shape[1], out.shape[0]))

    DepthEstimator.finish = _oracle_finish
