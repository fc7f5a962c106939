"""One factory for every intervention device, by name (what ``actor.intervention.device`` holds).

Device kinds register themselves; this module imports none of them until its kind is asked for
(so pynput and hidapi are needed only by those who use a keyboard or a HID device), and it
imports nothing outside ``serl_launcher``:

- the library's own kinds (scripted, keyboard, spacemouse, gamepad, none) are registered below;
- a kind from another package is declared as a Python entry point in the group
  :data:`ENTRY_POINT_GROUP` (``name = module:factory``, in that package's ``setup.py``; this
  project declares ``viewer`` (sim_envs) and ``leader_arm`` (robot_infra) there), loaded on
  first use;
- code that builds its own device calls :func:`register_device` before the actor starts.

A factory is called as ``factory(action_dim, **kwargs)``.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping
from importlib import metadata
from typing import Any

from serl_launcher.human.base import InterventionDevice

ENTRY_POINT_GROUP = "serl_launcher.devices"

Factory = Callable[..., InterventionDevice | None]
_REGISTRY: dict[str, Factory] = {}


def register_device(kind: str, factory: Factory | str) -> None:
    """Makes `kind` a device: `factory` is a callable or a ``"module:attribute"`` path (imported
    on first use). Registering a kind again replaces it."""
    if not kind or not isinstance(kind, str):
        raise ValueError(f"a device kind is a non-empty string, got {kind!r}")
    _REGISTRY[kind] = _lazy(factory) if isinstance(factory, str) else factory


def _lazy(path: str) -> Factory:
    module, _, attribute = path.partition(":")
    if not module or not attribute:
        raise ValueError(f"a device factory path is 'module:attribute', got {path!r}")

    def factory(*args: Any, **kwargs: Any) -> InterventionDevice | None:
        return getattr(importlib.import_module(module), attribute)(*args, **kwargs)

    factory.path = path  # type: ignore[attr-defined]
    return factory


@functools.cache
def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def device_kinds() -> tuple[str, ...]:
    """Every kind there is: registered ones first, then those of installed packages."""
    return tuple(dict.fromkeys([*_REGISTRY, *_entry_points()]))


def _factory(kind: str) -> Factory:
    if kind not in _REGISTRY and kind in _entry_points():
        register_device(kind, _entry_points()[kind].value)
    if kind not in _REGISTRY:
        hint = "" if _entry_points() else (" (no installed package declares devices: is the project "
                                           "installed with `pip install -e .`?)")
        raise ValueError(f"unknown intervention device {kind!r}; known: {', '.join(device_kinds())}{hint}")
    return _REGISTRY[kind]


def make_device(kind: str, action_dim: int, **kwargs: Any) -> InterventionDevice | None:
    """Makes the intervention device `kind` for actions of `action_dim` components.

    Keyword arguments go to the device's constructor, so a misspelt one is an error:

    - ``"scripted"``: :class:`~serl_launcher.human.scripted.StallTakeover`; needs ``expert=`` (an
      always-on device, e.g. ``exp.make_expert(env, config)``), then ``patience``, ``hold_steps``,
      ``window``, ``min_probability``, ``seed``.
    - ``"keyboard"``: :class:`~serl_launcher.human.keyboard.KeyboardDevice`.
    - ``"spacemouse"``: :class:`~serl_launcher.human.spacemouse.SpaceMouse`.
    - ``"gamepad"``: :class:`~serl_launcher.human.gamepad.Gamepad`.
    - ``"viewer"`` (entry point): the MuJoCo viewer's keys (sim_envs.viewer.ViewerKeyboard).
    - ``"leader_arm"`` (entry point): a leader arm on a Dynamixel or Feetech bus; needs ``port=``.
    - ``"none"``: no device (returns None): the policy acts alone.
    """
    return _factory(kind)(action_dim, **kwargs)


def _scripted(action_dim: int, **kwargs: Any) -> InterventionDevice:
    from serl_launcher.human.scripted import StallTakeover

    if kwargs.get("expert") is None:
        raise ValueError("the scripted device needs expert= (the always-on expert it uses)")
    return StallTakeover(**kwargs)


def _none(action_dim: int, **kwargs: Any) -> None:
    if kwargs:
        raise TypeError(f"the 'none' device takes no arguments, got {sorted(kwargs)}")
    return None


register_device("scripted", _scripted)
register_device("keyboard", "serl_launcher.human.keyboard:KeyboardDevice")
register_device("spacemouse", "serl_launcher.human.spacemouse:SpaceMouse")
register_device("gamepad", "serl_launcher.human.gamepad:Gamepad")
register_device("none", _none)


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
    return make_device(kind, action_dim, **device_kwargs(kind, intervention))


def device_kwargs(kind: str, intervention: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor arguments of device `kind` from ``actor.intervention``: its own section
    (``actor.intervention.<kind>``, e.g. ``leader_arm``: port, bus, calibration), plus its
    episode buttons from ``actor.intervention.episode`` (for devices with buttons)."""
    section = intervention.get(kind)
    kwargs = dict(section) if isinstance(section, Mapping) or hasattr(section, "keys") else {}
    episode = intervention.get("episode") or {}
    mapping = dict(episode.get(kind) or {})
    if kind == "keyboard":
        kwargs["episode_keys"] = mapping
    elif kind in ("gamepad", "spacemouse"):
        kwargs["episode_buttons"] = mapping
    return kwargs
