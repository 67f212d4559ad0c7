"""Colour and exact metric depth from Duckietown's simulator (``duckietown-gym-daffy``).

The simulator draws its camera view with OpenGL into a multisampled frame buffer and reads back only
colour. :class:`SimRenderer` hands its drawing routine a plain (single-sample) frame buffer with a
32-bit float depth attachment instead, so colour and depth come from the same pixel centres, and
turns the depth buffer value z in [0, 1] into the distance along the optical axis,
``2 n f / (f + n - (2 z - 1) (f - n))`` (``gluPerspective`` near n = 0.04 m, far f = 100 m; rows
flipped, OpenGL's origin is bottom-left). No pixel is multisampled: edges are not anti-aliased.

The camera (:class:`SimCamera`): the simulator's DB21 model, ``height_m`` above the road, optical axis
``pitch_deg`` below the horizontal, vertical field of view ``fov_y_deg``, square pixels, principal
point at the image centre (ROS pixel convention: cx = W / 2 - 0.5), optical centre ``forward_m``
ahead of the robot's origin (the simulator's ``cur_pos``). With ``distortion`` the frames are those
of a ``plumb_bob`` lens with the simulator's DB21 calibration (K, D; fx, fy scaled with the field of
view): a wider pinhole view is rendered and resampled so that every output pixel shows exactly what
its undistorted ray (:func:`depth_estimation.geometry.camera.pixel_rays`, the project's own
convention) meets; colour bilinear, depth bilinear in inverse depth (exact on planes) except at depth
edges, where the nearest rendered pixel is taken (no depth between an object and its background).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional, Tuple

import cv2
import numpy as np

from depth_estimation.geometry.camera import Intrinsics, pixel_rays
from depth_estimation.geometry.plane import GroundPlane, plane_from_height_pitch

NEAR_M, FAR_M = 0.04, 100.0  # the simulator's gluPerspective clipping planes
#: The simulator's DB21 lens (gym_duckietown/distortion.py): K at 640x480, plumb_bob D.
DB21_K = (305.5718893575089, 308.8338858195428, 303.0797142544728, 231.8845403702499)  # fx, fy, cx, cy
DB21_D = (-0.2, 0.0305, 0.0005859930422629722, -0.0006697840226199427, 0.0)
DB21_FOV_Y_DEG = 75.0  # the simulator's nominal field of view, which DB21_K stands for
EDGE_RATIO = 0.02  # inverse-depth interpolation is kept where it is within 2 % of the nearest pixel


@dataclass(frozen=True)
class SimCamera:
    """One simulated robot's camera (see the module docstring); defaults are the simulator's nominal."""
    height_m: float = 0.108
    pitch_deg: float = 19.15
    fov_y_deg: float = 75.0
    width: int = 640
    height: int = 480
    forward_m: float = 0.066
    distortion: bool = False

    def intrinsics(self) -> Intrinsics:
        """The camera_info of the frames: the GL pinhole, or the DB21 lens with its distortion."""
        w, h = self.width, self.height
        if not self.distortion:
            f = (h / 2.0) / math.tan(math.radians(self.fov_y_deg) / 2.0)
            return Intrinsics(f, f, w / 2.0 - 0.5, h / 2.0 - 0.5, w, h, (0.0,) * 5, "plumb_bob")
        zoom = math.tan(math.radians(DB21_FOV_Y_DEG) / 2.0) / math.tan(math.radians(self.fov_y_deg) / 2.0)
        fx, fy, cx, cy = DB21_K
        sx, sy = w / 640.0, h / 480.0
        return Intrinsics(fx * zoom * sx, fy * zoom * sy, cx * sx, cy * sy, w, h, DB21_D, "plumb_bob")

    def plane(self) -> GroundPlane:
        """The road in the camera's optical frame, with the ground frame's origin at the robot's origin
        (``forward_m`` behind the point under the camera), x forward, y left, z up."""
        plane = plane_from_height_pitch(self.height_m, self.pitch_deg)
        t = plane.translation
        return replace(plane, translation=(t[0] + self.forward_m, t[1], t[2]))


def depth_from_buffer(z: np.ndarray, max_depth_m: float) -> np.ndarray:
    """float32 metres along the optical axis of OpenGL depth-buffer values (rows as read, bottom
    first); 0 where nothing was drawn (the sky) or farther than ``max_depth_m``."""
    z = np.asarray(z, np.float64)
    depth = 2.0 * NEAR_M * FAR_M / (FAR_M + NEAR_M - (2.0 * z - 1.0) * (FAR_M - NEAR_M))
    depth[(z >= 1.0) | (depth > max_depth_m)] = 0.0
    return np.ascontiguousarray(depth[::-1]).astype(np.float32)


class _Canvas:
    """The pinhole view that is rendered: its size, field of view and the resampling maps to the
    output camera (None without distortion)."""

    def __init__(self, camera: SimCamera):
        out = camera.intrinsics()
        self.maps: Optional[Tuple[np.ndarray, np.ndarray]] = None
        if not camera.distortion:
            self.width, self.height, self.fov_y_deg = camera.width, camera.height, camera.fov_y_deg
            return
        xn, yn = pixel_rays(out, out.height, out.width)
        f = out.fy  # the rendered view keeps the output's central resolution
        # even halves: rows of 4k pixels (glReadPixels pads RGB rows to 4 bytes)
        half_w = 2 * (int(math.ceil(float(np.abs(xn).max()) * f / 2.0)) + 1)
        half_h = 2 * (int(math.ceil(float(np.abs(yn).max()) * f / 2.0)) + 1)
        self.width, self.height = 2 * half_w, 2 * half_h
        self.fov_y_deg = math.degrees(2.0 * math.atan(half_h / f))
        cx, cy = half_w - 0.5, half_h - 0.5
        self.maps = ((cx + f * xn).astype(np.float32), (cy + f * yn).astype(np.float32))

    def resample(self, rgb: np.ndarray, depth: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        if self.maps is None:
            return rgb, depth
        mx, my = self.maps
        rgb = cv2.remap(rgb, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        near = cv2.remap(depth, mx, my, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)
        with np.errstate(divide="ignore"):
            inverse = np.where(depth > 0, 1.0 / np.maximum(depth, 1e-9), 0.0).astype(np.float32)
        inv = cv2.remap(inverse, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        with np.errstate(divide="ignore", invalid="ignore"):
            smooth = np.where(inv > 0, 1.0 / inv, 0.0)
            keep = (near > 0) & (np.abs(smooth - near) <= EDGE_RATIO * near)
        return rgb, np.where(keep, smooth, near).astype(np.float32)


class SimRenderer:
    """Renders one simulator (``sim``, a ``gym_duckietown.simulator.Simulator`` on a display) through
    ``camera``: :meth:`render` gives (RGB uint8 HxWx3, depth float32 HxW metres, 0 = none). The
    simulator's own camera values are overridden by ``camera`` (call :meth:`apply_camera` after each
    ``reset()``, which re-randomizes them)."""

    def __init__(self, sim, camera: SimCamera, max_depth_m: float = 10.0):
        from pyglet import gl  # optional: only the simulator needs pyglet

        self.gl, self.sim, self.camera, self.max_depth_m = gl, sim, camera, float(max_depth_m)
        self.canvas = _Canvas(camera)
        w, h = self.canvas.width, self.canvas.height
        self.fbo = self._framebuffer(w, h, depth=True)
        self.final_fbo = self._framebuffer(w, h, depth=False)
        self.rgb = np.zeros((h, w, 3), np.uint8)
        self.zbuf = np.zeros((h, w), np.float32)
        self.apply_camera()

    def _framebuffer(self, width: int, height: int, depth: bool) -> int:
        from ctypes import byref

        gl = self.gl
        fbo = gl.GLuint(0)
        gl.glGenFramebuffers(1, byref(fbo))
        gl.glBindFramebuffer(gl.GL_FRAMEBUFFER, fbo)
        attachments = [(gl.GL_RGBA8, gl.GL_COLOR_ATTACHMENT0)]
        if depth:
            attachments.append((gl.GL_DEPTH_COMPONENT32F, gl.GL_DEPTH_ATTACHMENT))
        for fmt, attachment in attachments:
            rb = gl.GLuint(0)
            gl.glGenRenderbuffers(1, byref(rb))
            gl.glBindRenderbuffer(gl.GL_RENDERBUFFER, rb)
            gl.glRenderbufferStorage(gl.GL_RENDERBUFFER, fmt, width, height)
            gl.glFramebufferRenderbuffer(gl.GL_FRAMEBUFFER, attachment, gl.GL_RENDERBUFFER, rb)
        complete = gl.glCheckFramebufferStatus(gl.GL_FRAMEBUFFER) == gl.GL_FRAMEBUFFER_COMPLETE
        gl.glBindFramebuffer(gl.GL_FRAMEBUFFER, 0)
        if not complete:
            raise RuntimeError("OpenGL cannot make a %dx%d frame buffer with a float depth attachment"
                               % (width, height))
        return fbo

    def apply_camera(self) -> None:
        """Put ``camera``'s pose into the simulator (plain floats: its ctypes calls reject numpy
        values), with no per-render position noise (the calibration holds for every frame)."""
        sim, cam = self.sim, self.camera
        sim.cam_height = float(cam.height_m)
        sim.cam_angle = [float(cam.pitch_deg), 0.0, 0.0]
        sim.cam_fov_y = float(self.canvas.fov_y_deg)
        settings = getattr(sim, "randomization_settings", None)
        if isinstance(settings, dict) and "camera_noise" in settings:
            settings["camera_noise"] = np.zeros(3)

    def render(self, pos, angle: float) -> Tuple[np.ndarray, np.ndarray]:
        """(RGB, depth) of the robot at ``pos`` (the simulator's x, 0, z) heading ``angle`` (radians)."""
        from ctypes import POINTER

        gl, sim = self.gl, self.sim
        sim.cur_pos = np.array([float(pos[0]), 0.0, float(pos[2])])
        sim.cur_angle = float(angle)
        w, h = self.canvas.width, self.canvas.height
        gl.glPixelStorei(gl.GL_PACK_ALIGNMENT, 1)  # rows as numpy lays them out, whatever the width
        rgb = sim._render_img(w, h, self.fbo, self.final_fbo, self.rgb, top_down=False)
        gl.glBindFramebuffer(gl.GL_FRAMEBUFFER, self.fbo)
        gl.glReadPixels(0, 0, w, h, gl.GL_DEPTH_COMPONENT, gl.GL_FLOAT,
                        self.zbuf.ctypes.data_as(POINTER(gl.GLfloat)))
        gl.glBindFramebuffer(gl.GL_FRAMEBUFFER, 0)
        depth = depth_from_buffer(self.zbuf, self.max_depth_m)
        return self.canvas.resample(np.ascontiguousarray(rgb), depth)
