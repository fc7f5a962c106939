"""MuJoCo tasks. Importing this package registers the gymnasium ids:

- ``PandaPickCube-v0``: state observations (proprio + cube position).
- ``PandaPickCubeVision-v0``: proprio + ``front`` and ``wrist`` camera images.
- ``SO101PickCube-v0``, ``SO101PickCubeVision-v0``: the same task on the SO-101 arm.
- ``PandaPegInsert-v0``, ``PandaPegInsertVision-v0``: the Panda inserts a peg it holds into a hole
  with 1 mm clearance; force/torque in the state (and the hole's position, or cameras).
- ``PandaPickPlace-v0``, ``PandaPickPlaceVision-v0``: the Panda picks the cube and places it in a
  bin (a multi-stage task); the cube's and the bin's positions in the state, or cameras.

It also selects a headless OpenGL backend when there is no display (see
:mod:`sim_envs.rendering`): MuJoCo reads ``MUJOCO_GL`` once, at its first import, so the choice
has to be made before any module here imports mujoco.
"""

from gymnasium.envs.registration import register, registry

from sim_envs.rendering import select_gl_backend

select_gl_backend()

ENV_IDS = ("PandaPickCube-v0", "PandaPickCubeVision-v0", "SO101PickCube-v0", "SO101PickCubeVision-v0",
           "PandaPegInsert-v0", "PandaPegInsertVision-v0", "PandaPickPlace-v0", "PandaPickPlaceVision-v0")


def _register(state_id: str, vision_id: str, entry_point: str) -> None:
    """A task's state and vision ids (the vision one with image_obs on), once per process."""
    if state_id not in registry:
        register(id=state_id, entry_point=entry_point)
        register(id=vision_id, entry_point=entry_point, kwargs={"image_obs": True})


_register("PandaPickCube-v0", "PandaPickCubeVision-v0", "sim_envs.panda_pick_cube:PandaPickCubeEnv")
_register("SO101PickCube-v0", "SO101PickCubeVision-v0", "sim_envs.so101_pick_cube:SO101PickCubeEnv")
_register("PandaPegInsert-v0", "PandaPegInsertVision-v0", "sim_envs.panda_peg_insert:PandaPegInsertEnv")
_register("PandaPickPlace-v0", "PandaPickPlaceVision-v0", "sim_envs.panda_pick_place:PandaPickPlaceEnv")
