"""Input and output with no model in sight: atomic writes (files and folders), ROS 1 bags read
and written without ROS (``rosbags``), image sizes read from JPEG/PNG headers, and the package's
cache folder. Imports only the standard library, numpy, OpenCV and (lazily) rosbags/safetensors; nothing
else of this package."""
