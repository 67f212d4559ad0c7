"""The depth node's frame path without ROS: the latest-frame slot between the subscriber and the
worker, the pause/throttle gate in front of it (``~switch``, ``~process_frequency``), frame
validation and decoding, the depth pipeline (decode -> infer -> colorize -> encode), colorizing,
the node's parameters and its health counters for diagnostics. The ROS node
(``src/depth_node.py``) only converts messages around it. May import :mod:`depth_estimation.runtime`
and below."""
