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

Importing the package sets :data:`CPU_THREAD_ENV` (a value already in the environment wins): torch's
OpenMP reads it once, when torch loads, and every node and tool imports this package before torch.
"""
import os

__version__ = "0.1.0"

# OpenMP workers that finished their share of an operator sleep instead of spinning: on a few cores
# the spinning workers take the cores that the frame stream's other stages (decode, colorize,
# publish) and the other processes need (README, "CPU threads").
CPU_THREAD_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}
for _name, _value in CPU_THREAD_ENV.items():
    os.environ.setdefault(_name, _value)
