"""Test-only stand-in for dt-ros-commons' ``duckietown_msgs`` (not installed on a plain ROS): see msg/."""
