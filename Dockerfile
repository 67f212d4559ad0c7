# Duckietown project image (template-ros v3, distro daffy: Ubuntu 20.04, ROS Noetic, Python 3.8).
# Build: `dts devel build -f` (laptop) or `dts devel build -f -H ROBOT`; run: `dts devel run -R ROBOT`.

# parameters
ARG REPO_NAME="depth-estimation"
ARG DESCRIPTION="Monocular depth estimation (Depth-Anything-V2) on the Duckiebot camera stream"
ARG MAINTAINER="Depth Perception Team (perception@duckietown-depth.org)"
# pick an icon from: https://fontawesome.com/v4.7.0/icons/
ARG ICON="eye"

ARG ARCH
ARG DISTRO=daffy
ARG DOCKER_REGISTRY=docker.io
ARG BASE_IMAGE=dt-ros-commons
ARG BASE_TAG=${DISTRO}-${ARCH}
ARG LAUNCHER=default

# define base image
FROM ${DOCKER_REGISTRY}/duckietown/${BASE_IMAGE}:${BASE_TAG} AS base

# recall all arguments (ARGs declared before FROM are empty after it otherwise)
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

# install python3 dependencies.
# amd64 (laptop, optionally with a CUDA GPU): the PyTorch/transformers path, torch 2.4.1 from
# dependencies-py3.txt (the last torch release for Python 3.8).
# arm64v8 (Jetson Nano) is not covered by this path: the Jetson path (ONNX -> TensorRT on
# dt-machine-learning-base-environment) comes with a later change.
ARG PIP_INDEX_URL="https://pypi.org/simple"
ENV PIP_INDEX_URL=${PIP_INDEX_URL}
COPY ./dependencies-py3.* "${REPO_PATH}/"
RUN dt-pip3-install "${REPO_PATH}/dependencies-py3.*"
# fail here rather than on the robot if the stack does not work together
# (e.g. torch with the numpy 1.17 that the base image has from apt)
RUN python3 -c "import cv2, numpy, torch, transformers; torch.from_numpy(numpy.zeros(1))"

# copy the source code
COPY ./packages "${REPO_PATH}/packages"
COPY ./assets "${REPO_PATH}/assets"

# build packages
RUN . /opt/ros/${ROS_DISTRO}/setup.sh && \
  catkin build \
    --workspace ${CATKIN_WS_DIR}/

# bake the default model's weights into the image: the robot may have no internet, and /data
# is mounted from the robot at runtime, so the cache lives inside the image
ARG DEFAULT_MODEL=da2-small
ENV HF_HOME=/opt/depth_estimation/hf
RUN PYTHONPATH=${REPO_PATH}/packages/depth_estimation/include \
  python3 -m depth_estimation.tools.weights fetch "${DEFAULT_MODEL}"

# what the launchers run unless DEPTH_MODEL / DEPTH_BACKEND are set:
# - amd64 (laptop, `dts devel run -R ROBOT`): the model with PyTorch (CUDA when the laptop has it);
# - arm64v8 (Jetson Nano, `-H ROBOT`): the model exported to ONNX here at the embedded input size;
#   the node builds the TensorRT engine from it on first start (minutes; cached next to it).
#   TensorRT 7.1 and PyCUDA come with Duckietown's machine-learning base: build it with
#   BASE_IMAGE=dt-machine-learning-base-environment. Not built or run here (no Docker, no Jetson).
ARG ARCH
ARG DEFAULT_INPUT_SIZE=308
RUN mkdir -p /opt/depth_estimation && \
  if [ "${ARCH}" = "arm64v8" ]; then \
    PYTHONPATH=${REPO_PATH}/packages/depth_estimation/include python3 -m depth_estimation.tools.export \
      "${DEFAULT_MODEL}" --input-size "${DEFAULT_INPUT_SIZE}" --frame-size 640x480 \
      --out /opt/depth_estimation/default.onnx && \
    echo /opt/depth_estimation/default.onnx > /opt/depth_estimation/default_model && \
    echo tensorrt > /opt/depth_estimation/default_backend; \
  else \
    echo "${DEFAULT_MODEL}" > /opt/depth_estimation/default_model && \
    echo torch > /opt/depth_estimation/default_backend; \
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
