#!/bin/bash
# dt-launcher-depth-estimation: the depth node on the robot's camera stream.
# DEPTH_MODEL (set in the image to the Dockerfile's DEFAULT_MODEL, whose weights are baked in)
# picks the model. Another model needs its weights fetched first (python3 -m
# depth_estimation.weights fetch SPEC), or use DEPTH_MODEL=random:<arch> for untrained weights.

source /environment.sh

# initialize launch file
dt-launchfile-init

# launching app
dt-exec roslaunch --wait depth_estimation depth_node.launch \
    veh:="$VEHICLE_NAME" model:="${DEPTH_MODEL:-da2-small}"

# wait for app to end
dt-launchfile-join
