"""Real-arm gymnasium envs. Importing this package registers ``RealArm-v0``
(:class:`~robot_infra.envs.real_arm_env.RealArmEnv`), declared nondeterministic: a real arm
never repeats an observation exactly, whatever the seed."""

from gymnasium.envs.registration import register, registry

ENV_IDS = ("RealArm-v0",)

if "RealArm-v0" not in registry:
    register(id="RealArm-v0", entry_point="robot_infra.envs.real_arm_env:RealArmEnv", nondeterministic=True)
