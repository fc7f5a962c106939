"""Intervention devices: everything that can propose an action and take over from the policy."""

from serl_launcher.human.base import DeviceAction, InterventionDevice

__all__ = ["DeviceAction", "InterventionDevice"]
