"""One factory for every intervention device, by name (what ``actor.intervention.device`` holds).

Each device module is imported only when its kind is asked for, so pynput and hidapi are needed
only by those who use a keyboard or a HID device.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from serl_launcher.human.base import InterventionDevice

DEVICE_KINDS = ("scripted", "keyboard", "spacemouse", "gamepad", "viewer", "leader_arm", "none")


def make_device(kind: str, action_dim: int, **kwargs: Any) -> InterventionDevice | None:
    """Makes the intervention device `kind` for actions of `action_dim` components.

    Keyword arguments go to the device's constructor, so a misspelt one is an error:

    - ``"scripted"``: :class:`~serl_launcher.human.scripted.StallTakeover`; needs ``expert=`` (an
      always-on device, e.g. ``exp.make_expert(env, config)``), then ``patience``, ``hold_steps``,
      ``window``, ``min_probability``, ``seed``.
    - ``"keyboard"``: :class:`~serl_launcher.human.keyboard.KeyboardDevice`.
    - ``"spacemouse"``: :class:`~serl_launcher.human.spacemouse.SpaceMouse`.
    - ``"gamepad"``: :class:`~serl_launcher.human.gamepad.Gamepad`.
    - ``"viewer"``: :class:`sim_envs.viewer.ViewerKeyboard`, fed by the MuJoCo viewer's keys.
    - ``"leader_arm"``: :class:`robot_infra.dynamixel.leader_arm.LeaderArm`; needs ``port=``.
    - ``"none"``: no device (returns None): the policy acts alone.
    """
    if kind == "scripted":
        from serl_launcher.human.scripted import StallTakeover

        if kwargs.get("expert") is None:
            raise ValueError("the scripted device needs expert= (the always-on expert it uses)")
        return StallTakeover(**kwargs)
    if kind == "keyboard":
        from serl_launcher.human.keyboard import KeyboardDevice

        return KeyboardDevice(action_dim, **kwargs)
    if kind == "spacemouse":
        from serl_launcher.human.spacemouse import SpaceMouse

        return SpaceMouse(action_dim, **kwargs)
    if kind == "gamepad":
        from serl_launcher.human.gamepad import Gamepad

        return Gamepad(action_dim, **kwargs)
    if kind == "viewer":
        from sim_envs.viewer import ViewerKeyboard

        return ViewerKeyboard(action_dim, **kwargs)
    if kind == "leader_arm":
        from robot_infra.dynamixel.leader_arm import LeaderArm

        return LeaderArm(action_dim, **kwargs)
    if kind == "none":
        if kwargs:
            raise TypeError(f"the 'none' device takes no arguments, got {sorted(kwargs)}")
        return None
    raise ValueError(f"unknown intervention device {kind!r}; known: {', '.join(DEVICE_KINDS)}")


def device_from_config(
    intervention: Mapping[str, Any],
    action_dim: int,
    make_expert: Callable[[], InterventionDevice | None],
    seed: int = 0,
) -> InterventionDevice | None:
    """The actor's device from its ``actor.intervention`` config (None: the policy acts alone).

    ``"scripted"`` wraps ``make_expert()`` (None when the experiment has no expert) in
    :class:`~serl_launcher.human.scripted.StallTakeover` with the config's schedule; a person's
    device (keyboard, SpaceMouse, gamepad) intervenes whenever the person takes over.
    """
    kind = intervention["device"]
    if not intervention["enabled"] or kind == "none":
        return None
    if kind == "scripted":
        expert = make_expert()
        if expert is None:
            return None
        i = intervention
        return make_device("scripted", action_dim, expert=expert, patience=i["patience"],
                           hold_steps=i["hold_steps"], window=i["window"],
                           min_probability=i["min_probability"], seed=seed)
    if kind == "viewer":
        raise ValueError("intervention device 'viewer' is fed by the MuJoCo viewer window, which "
                         "an actor does not open (see sim_envs.viewer.run_viewer); use keyboard, "
                         "spacemouse or gamepad")
    if kind == "leader_arm":  # its port, motors and kinematic model come from the config
        return make_device(kind, action_dim, **dict(intervention.get("leader_arm", {})))
    return make_device(kind, action_dim, **episode_kwargs(kind, intervention))


def episode_kwargs(kind: str, intervention: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor argument that gives device `kind` its episode buttons from
    ``actor.intervention.episode`` (none for devices without buttons)."""
    episode = intervention.get("episode") or {}
    mapping = dict(episode.get(kind) or {})
    if kind == "keyboard":
        return {"episode_keys": mapping}
    if kind in ("gamepad", "spacemouse"):
        return {"episode_buttons": mapping}
    return {}
