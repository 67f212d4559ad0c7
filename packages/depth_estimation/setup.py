# Installed by catkin_python_setup(): the ROS-free library lives in include/depth_estimation.
from setuptools import setup

from catkin_pkg.python_setup import generate_distutils_setup

setup(**generate_distutils_setup(packages=["depth_estimation"], package_dir={"": "include"}))
