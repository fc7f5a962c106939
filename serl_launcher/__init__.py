"""serl_launcher: agents, buffers, transport and the actor/learner roles.

Importing this package is cheap and has no side effects (no jax, no devices, no flags).
"""

__version__ = "0.1.0"
