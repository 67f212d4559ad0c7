"""ROS-free core of the Duckietown depth package.

Everything here imports without rospy: models and their loading, preprocessing,
inference, colorization, frame decoding, timing and health statistics. The ROS
nodes in ``src/`` only translate between ROS messages and this library.
"""

__version__ = "0.1.0"
