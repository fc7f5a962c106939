"""Real-arm infrastructure, testable without hardware.

- :mod:`robot_infra.robot_server`: one arm behind HTTP + JSON (MuJoCo or Franka backend);
- :mod:`robot_infra.envs`: gymnasium envs that drive an arm through that server, with the same
  observation/action contract as ``sim_envs``.

Nothing here is imported by the package itself: each part pulls in its own dependencies
(MuJoCo, franky, cameras) only when used.
"""
