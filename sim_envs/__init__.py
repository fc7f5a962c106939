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

if "PandaPickCube-v0" not in registry:
    register(id="PandaPickCube-v0", entry_point="sim_envs.panda_pick_cube:PandaPickCubeEnv")
    register(
        id="PandaPickCubeVision-v0",
        entry_point="sim_envs.panda_pick_cube:PandaPickCubeEnv",
        kwargs={"image_obs": True},
    )
if "SO101PickCube-v0" not in registry:
    register(id="SO101PickCube-v0", entry_point="sim_envs.so101_pick_cube:SO101PickCubeEnv")
    register(
        id="SO101PickCubeVision-v0",
        entry_point="sim_envs.so101_pick_cube:SO101PickCubeEnv",
        kwargs={"image_obs": True},
    )
if "PandaPegInsert-v0" not in registry:
    register(id="PandaPegInsert-v0", entry_point="sim_envs.panda_peg_insert:PandaPegInsertEnv")
    register(
        id="PandaPegInsertVision-v0",
        entry_point="sim_envs.panda_peg_insert:PandaPegInsertEnv",
        kwargs={"image_obs": True},
    )
if "PandaPickPlace-v0" not in registry:
    register(id="PandaPickPlace-v0", entry_point="sim_envs.panda_pick_place:PandaPickPlaceEnv")
    register(
        id="PandaPickPlaceVision-v0",
        entry_point="sim_envs.panda_pick_place:PandaPickPlaceEnv",
        kwargs={"image_obs": True},
    )
