"""Intervention devices: everything that can propose an action and take over from the policy."""

from serl_launcher.human.base import DeviceAction, InterventionDevice
from serl_launcher.human.devices import DEVICE_KINDS, make_device

__all__ = ["DEVICE_KINDS", "DeviceAction", "InterventionDevice", "make_device"]
