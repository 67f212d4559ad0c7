"""ROS-free core of the Duckietown depth package.

Everything here imports without rospy; the ROS nodes in ``src/`` only translate between ROS
messages and this library. Subpackages, lowest layer first (each imports only from the layers
before it, never from later ones):

* :mod:`.io` - atomic writes, ROS bags without ROS, image headers, the package cache;
* :mod:`.models` - model specs and the networks: Depth-Anything-V2, its original checkpoints,
  the FastDepth student, HQQ quantization, released weights;
* :mod:`.runtime` - preprocessing, the :class:`~.runtime.estimator.DepthEstimator`, one runner per
  backend (torch, ONNX Runtime, TensorRT), the ONNX export;
* :mod:`.framepath` - the node's frame path: latest-frame slot, frame decoding, colorizing,
  health, the pipeline;
* :mod:`.evaluation` - metrics, scoring, depth-eval, DA-2K, RGB-D/NYU converters;
* :mod:`.distill` - teacher labels, losses, data, checkpoints, the student's training loop;
* :mod:`.tools` - commands built on the rest: benchmark, sweep, demo, export, quantize, weights.

:mod:`.options` holds the command-line options every tool shares. ``export``, ``quantize`` and
``weights`` at this level only keep ``python3 -m depth_estimation.<command>`` working.
"""

__version__ = "0.1.0"
