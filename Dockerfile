# Duckietown project image (template-ros v3, distro daffy: Ubuntu 20.04, ROS Noetic, Python 3.8).
# Build: `dts devel build -f` (laptop, amd64) or, on the Jetson Nano (arm64v8),
# `dts devel build -f -H ROBOT -A BASE_IMAGE dt-machine-learning-base-environment`;
# run: `dts devel run -R ROBOT` (laptop) or `dts devel run -H ROBOT` (robot).
# The base is the BASE_IMAGE build argument (one FROM: the classic builder dts uses pulls every stage
# of a multi-stage file); the Python packages follow ARCH (README, "On the robot"):
# - amd64: dt-ros-commons + PyTorch/transformers (dependencies-py3.txt); the default model's weights
#   are baked in and run with torch (CUDA when the laptop has it).
# - arm64v8: dt-machine-learning-base-environment (TensorRT 7.1.3 + PyCUDA for Python 3.8; CUDA and
#   cuDNN from the robot's JetPack) + numpy/OpenCV only (dependencies-py3.arm64v8.txt): no torch on
#   the robot; numpy < 1.24 for TensorRT 7.1 and PyCUDA 2021.1, checked at build time. The model is
#   the ONNX file exported once on the laptop into assets/robot/default.onnx (a `-H` build runs on the
#   Nano itself, where torch cannot export it), stored once in the image; the node builds the TensorRT
#   engine from it on first start (minutes, once) into /data/config/depth_estimation/engines, or
#   `dts devel run -H ROBOT -L build-engine` builds it alone (launchers/build-engine.sh).

# parameters
ARG REPO_NAME="depth-estimation"
ARG DESCRIPTION="Monocular depth estimation (Depth-Anything-V2) on the Duckiebot camera stream"
ARG MAINTAINER="Depth Perception Team (perception@duckietown-depth.org)"
# pick an icon from: https://fontawesome.com/v4.7.0/icons/
ARG ICON="eye"

ARG ARCH
ARG DISTRO=daffy
ARG DOCKER_REGISTRY=docker.io
# dt-ros-commons on the laptop (amd64); on the Jetson (arm64v8) Duckietown's machine-learning base,
# dt-ros-commons plus TensorRT 7.1.3 and PyCUDA: `-A BASE_IMAGE dt-machine-learning-base-environment`
# (an arm64v8 build without it stops below, naming it)
ARG BASE_IMAGE=dt-ros-commons
ARG BASE_TAG=${DISTRO}-${ARCH}
ARG LAUNCHER=default

# define base image
FROM ${DOCKER_REGISTRY}/duckietown/${BASE_IMAGE}:${BASE_TAG}

# recall all arguments (ARGs declared before FROM are empty after it otherwise)
ARG ARCH
ARG DISTRO
ARG REPO_NAME
ARG DESCRIPTION
ARG MAINTAINER
ARG ICON
ARG BASE_TAG
ARG BASE_IMAGE
ARG LAUNCHER
# - buildkit
ARG TARGETPLATFORM
ARG TARGETOS
ARG TARGETARCH
ARG TARGETVARIANT

# check build arguments
RUN dt-build-env-check "${REPO_NAME}" "${MAINTAINER}" "${DESCRIPTION}"

# define/create repository path (the catkin package inside is `depth_estimation`)
ARG REPO_PATH="${CATKIN_WS_DIR}/src/${REPO_NAME}"
ARG LAUNCH_PATH="${LAUNCH_DIR}/${REPO_NAME}"
RUN mkdir -p "${REPO_PATH}" "${LAUNCH_PATH}"
WORKDIR "${REPO_PATH}"

# keep some arguments as environment variables
ENV DT_MODULE_TYPE="${REPO_NAME}" \
    DT_MODULE_DESCRIPTION="${DESCRIPTION}" \
    DT_MODULE_ICON="${ICON}" \
    DT_MAINTAINER="${MAINTAINER}" \
    DT_REPO_PATH="${REPO_PATH}" \
    DT_LAUNCH_PATH="${LAUNCH_PATH}" \
    DT_LAUNCHER="${LAUNCHER}"

# install apt dependencies
COPY ./dependencies-apt.txt "${REPO_PATH}/"
RUN dt-apt-install ${REPO_PATH}/dependencies-apt.txt

# install python3 dependencies, per ARCH: amd64 dependencies-py3.txt (torch 2.4.1, transformers,
# onnx, hqq; the last releases for Python 3.8) and dependencies-py3.dt.txt (Duckietown libraries for
# the laptop-side tools), arm64v8 only dependencies-py3.arm64v8.txt (numpy, OpenCV): the node on the
# robot needs nothing else.
ARG PIP_INDEX_URL="https://pypi.org/simple"
ENV PIP_INDEX_URL=${PIP_INDEX_URL}
COPY ./dependencies-py3.* "${REPO_PATH}/"
RUN if [ "${ARCH}" = "arm64v8" ]; then files="dependencies-py3.arm64v8.txt"; \
    else files="dependencies-py3.txt dependencies-py3.dt.txt"; fi; \
  for f in ${files}; do \
    if [ -f "${REPO_PATH}/${f}" ]; then dt-pip3-install "${REPO_PATH}/${f}" || exit 1; fi; \
  done
# fail here rather than on the robot if the stack does not work together: amd64 imports torch with
# the base's numpy; arm64v8 has no torch at all and finds TensorRT and PyCUDA (found, not imported:
# importing them needs the GPU, which a build may not have)
RUN if [ "${ARCH}" = "arm64v8" ]; then \
    python3 -c "import cv2, numpy, yaml, importlib.util as u; \
assert u.find_spec('torch') is None, 'torch in the arm64v8 image'; \
assert u.find_spec('tensorrt') and u.find_spec('pycuda'), 'no TensorRT/PyCUDA: build with \
-A BASE_IMAGE dt-machine-learning-base-environment'"; \
  else \
    python3 -c "import cv2, numpy, torch, transformers; torch.from_numpy(numpy.zeros(1))"; \
  fi

# copy the source code
COPY ./packages "${REPO_PATH}/packages"
COPY ./assets "${REPO_PATH}/assets"

# arm64v8: numpy in the range TensorRT 7.1 and PyCUDA 2021.1 work with, and PyCUDA's dtype registry
# (what `import pycuda.autoinit` runs; pure Python, no GPU) run once, so a numpy they cannot use fails
# the build here rather than every start on the robot
RUN if [ "${ARCH}" = "arm64v8" ]; then \
    PYTHONPATH=${REPO_PATH}/packages/depth_estimation/include python3 -m depth_estimation.runtime.jetson_check; \
  fi

# build packages
RUN . /opt/ros/${ROS_DISTRO}/setup.sh && \
  catkin build \
    --workspace ${CATKIN_WS_DIR}/

# what the launchers run unless DEPTH_MODEL / DEPTH_BACKEND are set (README, "On the robot"):
# - amd64: DEFAULT_MODEL's weights, fetched here (the robot may have no internet, and /data is
#   mounted at run time, so the cache lives inside the image), run with torch; when they cannot be
#   fetched, the student shipped in assets/models (fastdepth-duckietown, trained in simulation);
# - arm64v8: assets/robot/default.onnx, exported once on the laptop (fixed input, opset 11, checked
#   against torch there; e.g. da2-small at input 308 for 640x480 frames), run with TensorRT. The
#   build stops here, naming the command, when that file is missing or TensorRT 7.1 cannot read it.
#   The file stays where COPY put it (stored once: ~100 MB of the robot's SD card for da2-small).
ARG DEFAULT_MODEL=da2-small
ARG ROBOT_ONNX=assets/robot/default.onnx
ENV HF_HOME=/opt/depth_estimation/hf
RUN mkdir -p /opt/depth_estimation && \
  if [ "${ARCH}" = "arm64v8" ]; then \
    test -f "${REPO_PATH}/${ROBOT_ONNX}" || { echo "no ${ROBOT_ONNX}: export it on the laptop first:" \
      "python3 -m depth_estimation.export da2-small --input-size 308 --frame-size 640x480" \
      "--out ${ROBOT_ONNX} (README, On the robot)"; exit 1; } && \
    python3 -c "import json, sys; r = json.load(open(sys.argv[1] + '.json')); \
sys.exit('%s: opset %s, %s' % (sys.argv[1], r['opset'], r['tensorrt_issues'])) \
if r['opset'] > 11 or r['tensorrt_issues'] else print('baking in', r['spec'], r['input_hw'])" \
      "${REPO_PATH}/${ROBOT_ONNX}" && \
    echo "${REPO_PATH}/${ROBOT_ONNX}" > /opt/depth_estimation/default_model && \
    echo tensorrt > /opt/depth_estimation/default_backend; \
  else \
    export PYTHONPATH=${REPO_PATH}/packages/depth_estimation/include && \
    if python3 -m depth_estimation.tools.weights fetch "${DEFAULT_MODEL}"; then \
      echo "${DEFAULT_MODEL}" > /opt/depth_estimation/default_model; \
    else echo "no weights for ${DEFAULT_MODEL}: the default is the shipped student fastdepth-duckietown" && \
      python3 -m depth_estimation.tools.weights where fastdepth-duckietown && \
      echo fastdepth-duckietown > /opt/depth_estimation/default_model; fi && \
    echo auto > /opt/depth_estimation/default_backend; \
  fi

# install launcher scripts
COPY ./launchers/. "${LAUNCH_PATH}/"
RUN dt-install-launchers "${LAUNCH_PATH}"

# define default command
CMD ["bash", "-c", "dt-launcher-${DT_LAUNCHER}"]

# store module metadata
LABEL org.duckietown.label.module.type="${REPO_NAME}" \
    org.duckietown.label.module.description="${DESCRIPTION}" \
    org.duckietown.label.module.icon="${ICON}" \
    org.duckietown.label.platform.os="${TARGETOS}" \
    org.duckietown.label.platform.architecture="${TARGETARCH}" \
    org.duckietown.label.platform.variant="${TARGETVARIANT}" \
    org.duckietown.label.code.location="${REPO_PATH}" \
    org.duckietown.label.code.version.distro="${DISTRO}" \
    org.duckietown.label.base.image="${BASE_IMAGE}" \
    org.duckietown.label.base.tag="${BASE_TAG}" \
    org.duckietown.label.maintainer="${MAINTAINER}"
