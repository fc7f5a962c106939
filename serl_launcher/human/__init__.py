"""Intervention devices: everything that can propose an action and take over from the policy."""

from serl_launcher.human.base import DeviceAction, InterventionDevice
from serl_launcher.human.devices import device_kinds, make_device, register_device

__all__ = ["DeviceAction", "InterventionDevice", "device_kinds", "make_device", "register_device"]
