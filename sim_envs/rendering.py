"""Headless OpenGL selection for MuJoCo.

MuJoCo picks its OpenGL backend from ``MUJOCO_GL`` when ``mujoco`` is first imported, so the choice
must be made before that import. :func:`select_gl_backend` keeps any value the user set; with none
and no display it picks EGL (GPU or Mesa's software driver) and falls back to OSMesa.
"""

from __future__ import annotations

import ctypes.util
import logging
import os
import sys
import warnings


def has_display() -> bool:
    """Whether a window can be opened (the interactive viewer, render_mode='human')."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def select_gl_backend() -> str:
    """Sets MUJOCO_GL (and the matching PYOPENGL_PLATFORM) if unset; returns the backend in use."""
    # PyOpenGL logs a harmless "no OpenGL_accelerate" line at INFO, which absl prints.
    logging.getLogger("OpenGL.acceleratesupport").setLevel(logging.WARNING)
    chosen = os.environ.get("MUJOCO_GL", "").strip().lower()
    if chosen:
        return chosen
    headless = not has_display()
    if "mujoco" in sys.modules:  # too late to choose: mujoco was imported with its default
        if headless:
            warnings.warn(
                "mujoco was imported before sim_envs with MUJOCO_GL unset and no display: "
                "offscreen rendering will fail. Import sim_envs first or set MUJOCO_GL=egl.",
                stacklevel=2,
            )
        return "glfw"
    if headless:
        if ctypes.util.find_library("EGL"):
            chosen = "egl"
        elif ctypes.util.find_library("OSMesa"):
            chosen = "osmesa"
        else:
            return ""  # nothing headless found; rendering will raise a clear error when used
        os.environ["MUJOCO_GL"] = chosen
        os.environ.setdefault("PYOPENGL_PLATFORM", chosen)
        return chosen
    return "glfw"


RENDER_HELP = (
    "Offscreen rendering failed (MUJOCO_GL={backend!r}). On a machine without a display set "
    "MUJOCO_GL=egl (needs libegl1 and libgl1-mesa-dri) or MUJOCO_GL=osmesa (needs libosmesa6) "
    "before starting Python (or import sim_envs before mujoco, which picks one); "
    "scripts/setup.sh installs both. Original error: {error}"
)
