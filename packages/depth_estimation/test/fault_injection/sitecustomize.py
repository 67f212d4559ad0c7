"""Test-only fault injection for the rostests: with DEPTH_FAIL_EVERY=N in the environment, every
N-th network call (DepthEstimator.run) raises (the node's start-up warm-up is call 1), so a test can
check that one failing frame is counted and the stream goes on. Put this folder first on
PYTHONPATH of the node under test; without the variable nothing is changed."""
import os

EVERY = int(os.environ.get("DEPTH_FAIL_EVERY", "0") or 0)

if EVERY > 0:
    from depth_estimation.runtime.estimator import DepthEstimator

    _run = DepthEstimator.run
    _calls = [0]

    def _failing_run(self, prepared):
        _calls[0] += 1
        if _calls[0] % EVERY == 0:
            raise RuntimeError("injected failure on network call %d" % _calls[0])
        return _run(self, prepared)

    DepthEstimator.run = _failing_run
