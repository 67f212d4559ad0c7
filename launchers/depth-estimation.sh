#!/bin/bash
# dt-launcher-depth-estimation: the depth node on the robot's camera stream.
# DEPTH_MODEL / DEPTH_BACKEND pick the model spec and backend; unset, the image's defaults are
# used (/opt/depth_estimation/default_{model,backend}, written at build time): on amd64 the baked-in
# DEFAULT_MODEL with backend auto (ONNX Runtime on a CPU, torch on a CUDA GPU); on arm64v8
# (Jetson) the ONNX file exported on the laptop with TensorRT,
# whose engine is built on first start into /data/config/depth_estimation/engines (kept across
# restarts; or once, alone, by dt-launcher-build-engine). The arm64v8 image has no torch: there
# DEPTH_MODEL must be an .onnx file (e.g. one put under /data) with DEPTH_BACKEND tensorrt. On amd64
# another model needs its weights fetched first (python3 -m depth_estimation.weights fetch SPEC), or
# use DEPTH_MODEL=random:<arch>.
# Exit codes: roslaunch exits 0 whatever its required node's code, so the node writes its own to
# DEPTH_NODE_EXIT_FILE; code 3 (the ROS master restarted) starts the node again, any other code
# ends this launcher, and the container, with that code (dts devel run has no restart policy).

source /environment.sh

# initialize launch file
dt-launchfile-init
trap 'DEPTH_STOPPING=1; dt-terminate' SIGINT SIGTERM  # a stop is not a restart

# launching app
DEFAULTS=/opt/depth_estimation
export DEPTH_NODE_EXIT_FILE="${DEPTH_NODE_EXIT_FILE:-/tmp/depth_node.exit_code}"
while true; do
    rm -f "$DEPTH_NODE_EXIT_FILE"
    dt-exec roslaunch --wait depth_estimation depth_node.launch \
        veh:="$VEHICLE_NAME" model:="${DEPTH_MODEL:-$(cat "$DEFAULTS/default_model")}" \
        backend:="${DEPTH_BACKEND:-$(cat "$DEFAULTS/default_backend")}"

    # wait for app to end
    dt-launchfile-join
    wait || true  # a stop interrupts the join: let the node finish
    code="$(cat "$DEPTH_NODE_EXIT_FILE" 2>/dev/null || true)"
    if [ "$code" != 3 ] || [ -n "${DEPTH_STOPPING:-}" ]; then
        break
    fi
    echo "depth_node exited with code 3 (the ROS master restarted): starting it again"
done
if [ -z "$code" ]; then
    echo "depth_node left no exit code (killed, or roslaunch failed before starting it)" >&2
    code=1
fi
exit "$code"
