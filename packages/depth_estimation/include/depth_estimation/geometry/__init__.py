"""Metric geometry from the robot's own calibration, without ROS or a model: the camera's intrinsics
(camera_info, Duckietown intrinsic files) and extrinsic ground homography (calibration.py, camera.py,
plane.py), the ground plane in the camera's optical frame and its per-pixel depth, the per-frame
robust fit that turns relative disparity into metres with a temporal filter (ground.py), and the
point cloud, laser scan and obstacle distance read off metric depth (obstacles.py). Pure numpy,
OpenCV and PyYAML; may import only :mod:`depth_estimation.io` and :mod:`depth_estimation.options`,
so the node, the evaluation and the tools can all use it."""
