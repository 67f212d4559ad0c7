#!/bin/bash
# dt-launcher-depth-estimation: the depth node on the robot's camera stream.
# DEPTH_MODEL / DEPTH_BACKEND pick the model spec and backend; unset, the image's defaults are
# used (/opt/depth_estimation/default_{model,backend}, written at build time): on amd64 the baked-in
# DEFAULT_MODEL with torch; on arm64v8 (Jetson) the ONNX file exported on the laptop with TensorRT,
# whose engine is built on first start into /data/config/depth_estimation/engines (kept across
# restarts). The arm64v8 image has no torch: there DEPTH_MODEL must be an .onnx file (e.g. one put
# under /data) with DEPTH_BACKEND tensorrt. On amd64 another model needs its weights fetched first
# (python3 -m depth_estimation.weights fetch SPEC), or use DEPTH_MODEL=random:<arch>.

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
