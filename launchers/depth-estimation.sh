#!/bin/bash
# dt-launcher-depth-estimation: the depth node on the robot's camera stream.
# DEPTH_MODEL / DEPTH_BACKEND pick the model spec and backend; unset, the image's defaults are
# used (/opt/depth_estimation/default_{model,backend}, written at build time: the baked-in
# DEFAULT_MODEL with torch on amd64, its ONNX export with TensorRT on arm64v8). Another model needs
# its weights fetched first (python3 -m depth_estimation.weights fetch SPEC), or use
# DEPTH_MODEL=random:<arch> for untrained weights.

source /environment.sh

# initialize launch file
dt-launchfile-init

# launching app
DEFAULTS=/opt/depth_estimation
dt-exec roslaunch --wait depth_estimation depth_node.launch \
    veh:="$VEHICLE_NAME" model:="${DEPTH_MODEL:-$(cat "$DEFAULTS/default_model")}" \
    backend:="${DEPTH_BACKEND:-$(cat "$DEFAULTS/default_backend")}"

# wait for app to end
dt-launchfile-join
