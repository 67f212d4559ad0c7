#!/bin/bash
# dt-launcher-build-engine: build the TensorRT engine of the image's model (or DEPTH_MODEL, an .onnx
# file) once, into /data/config/depth_estimation/engines, and exit; no ROS master or camera needed.
# On a 2 GB Jetson Nano stop the robot's other containers first, so the build has the memory:
#   dts devel run -H ROBOT -L build-engine
# The depth node then loads the engine in seconds. Exits with the builder's code (0: ready; 1: it
# failed, one line saying why). DEPTH_BUILD_ARGS adds options (e.g. --fp32, --workspace-mb 512).

source /environment.sh

# initialize launch file
dt-launchfile-init

# launching app
DEFAULTS=/opt/depth_estimation
dt-exec python3 -m depth_estimation.tools.build_engine \
    --model "${DEPTH_MODEL:-$(cat "$DEFAULTS/default_model")}" ${DEPTH_BUILD_ARGS:-}
builder=$!
wait "$builder" && code=0 || code=$?  # the builder's own code (the join's is always 0)

# wait for app to end
dt-launchfile-join
exit "$code"
