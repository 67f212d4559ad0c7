# Installed by catkin_python_setup(): the ROS-free library lives in include/depth_estimation.
from setuptools import find_packages, setup

from catkin_pkg.python_setup import generate_distutils_setup

setup(**generate_distutils_setup(packages=find_packages("include"), package_dir={"": "include"}))
