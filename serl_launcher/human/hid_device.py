"""What the HID devices (SpaceMouse, gamepad) share: finding, opening and reading one.

hidapi (``import hid``, from the ``hidapi`` package in the [robot] extra) is imported when a device
is opened, never at import. A reader thread reads input reports as they arrive and folds each
into the device's latest state with the device's pure ``parse_report``; ``get_action`` turns the
latest state into an action with the device's pure ``state_to_action``. Buttons pressed and
released between two ``get_action`` calls still count once, so a quick click is never lost.
"""

from __future__ import annotations

import dataclasses
import threading
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from serl_launcher import conventions

UDEV_HINT = (
    "On Linux, reading /dev/hidraw* needs permission: add a udev rule such as\n"
    '    KERNEL=="hidraw*", ATTRS{{idVendor}}=="{vendor:04x}", MODE="0660", TAG+="uaccess"\n'
    "to /etc/udev/rules.d/70-serl-teleop.rules (one line per vendor id), then run\n"
    "    sudo udevadm control --reload-rules && sudo udevadm trigger\n"
    "and plug the device in again."
)


class DeviceNotFoundError(RuntimeError):
    """No such HID device is connected, it cannot be opened, or hidapi is missing."""


@dataclasses.dataclass(frozen=True)
class HidMatch:
    """Which (vendor, product) ids a device may have; `products` is an inclusive range."""

    vendor_id: int
    products: tuple[int, int] | None = None  # None: any product of the vendor

    def matches(self, info: dict[str, Any]) -> bool:
        if info.get("vendor_id") != self.vendor_id:
            return False
        if self.products is None:
            return True
        return self.products[0] <= info.get("product_id", -1) <= self.products[1]

    def __str__(self) -> str:
        if self.products is None:
            return f"{self.vendor_id:#06x}:any product"
        low, high = self.products
        return f"{self.vendor_id:#06x}:{low:#06x}" + (f"-{high:#06x}" if high != low else "")


def import_hid(device_name: str):
    try:
        import hid
    except ImportError as error:
        raise DeviceNotFoundError(
            f"the {device_name} needs hidapi (pip install hidapi, or this package's [robot] "
            f"extra); importing it failed: {error}"
        ) from error
    if not hasattr(hid, "device"):
        raise DeviceNotFoundError(
            f"the {device_name} needs the `hid` module of the hidapi package (cython-hidapi); "
            f"the one imported from {getattr(hid, '__file__', '?')} is another package's"
        )
    return hid


def find_hid_device(
    device_name: str, matches: Sequence[HidMatch], usages: Sequence[tuple[int, int]], hint: str = ""
) -> dict[str, Any]:
    """The first connected HID interface with one of `matches`' ids, as ``hid.enumerate`` lists it.

    Interfaces that report a (usage page, usage) outside `usages` are skipped (a vendor's mice and
    keyboards, a receiver's other collections); interfaces that report none are kept.
    """
    hid = import_hid(device_name)
    present = hid.enumerate()
    found = [
        info for info in present
        if any(m.matches(info) for m in matches)
        and (not info.get("usage_page") or (info["usage_page"], info.get("usage")) in usages)
    ]
    if not found:
        looked_for = ", ".join(str(m) for m in matches)
        raise DeviceNotFoundError(
            f"no {device_name} found: hid.enumerate() lists {len(present)} HID interface(s), none "
            f"with vendor:product {looked_for}. Plug it in (a wireless one: its receiver, switched "
            f"on). {hint}" + UDEV_HINT.format(vendor=matches[0].vendor_id)
        )
    return found[0]


def open_hid_device(device_name: str, info: dict[str, Any]):
    """Opens the interface `info` describes; returns hidapi's device handle."""
    hid = import_hid(device_name)
    handle = hid.device()
    vendor, product = info.get("vendor_id", 0), info.get("product_id", 0)
    try:
        handle.open_path(info["path"])
    except OSError as error:
        raise DeviceNotFoundError(
            f"found the {device_name} ({vendor:#06x}:{product:#06x} at {info['path']!r}) but could "
            f"not open it: {error}. " + UDEV_HINT.format(vendor=vendor)
        ) from error
    return handle


def gripper_command(close: bool, open_: bool) -> float:
    """Close / open buttons -> the gripper component: +1, -1, or 0 (keep) for neither or both."""
    if close != open_:
        return conventions.GRIPPER_CLOSE if close else conventions.GRIPPER_OPEN
    return 0.0


def apply_deadzone(values: np.ndarray, deadzone: float) -> np.ndarray:
    """Zeroes |v| <= deadzone and rescales the rest so the output still runs from 0 to +-1."""
    magnitude = np.clip((np.abs(values) - deadzone) / (1.0 - deadzone), 0.0, 1.0)
    return (np.sign(values) * magnitude).astype(np.float32)


class HidDevice:
    """Base of the HID intervention devices: the reader thread and the latest state.

    Subclasses set ``name``, ``matches``, ``usages`` and the pure methods ``empty_state()`` and
    ``parse_report(report, previous)``; their states are NamedTuples with a ``buttons`` bit field
    (bit i set: button i is down). With ``connect=False`` nothing is opened and reports come
    only through :meth:`feed` (tests, or a caller with its own transport).
    """

    name = "HID device"
    matches: tuple[HidMatch, ...] = ()
    usages: tuple[tuple[int, int], ...] = ()
    not_found_hint = ""
    read_timeout_ms = 50  # how long a read blocks, so close() is prompt

    def __init__(self, connect: bool = True):
        self._lock = threading.Lock()
        self._state = self.empty_state()
        self._buttons_seen = 0  # buttons down at any time since the last take
        self._buttons_pressed = 0  # buttons that went down since the last take
        self._event_presses = 0  # buttons that went down since the last take_presses
        self._stop = threading.Event()
        self.lost = False  # set when the device stopped reporting (unplugged); it then never intervenes
        self._handle = None
        self._thread = None
        self.info: dict[str, Any] | None = None  # hid.enumerate()'s entry of the open device
        if connect:
            self.info = find_hid_device(self.name, self.matches, self.usages, self.not_found_hint)
            self._handle = open_hid_device(self.name, self.info)
            self._thread = threading.Thread(target=self._read_loop, daemon=True)
            self._thread.start()

    def empty_state(self) -> Any:
        raise NotImplementedError

    def parse_report(self, report: bytes, previous: Any) -> Any:
        raise NotImplementedError

    def feed(self, report: bytes | Sequence[int]) -> None:
        """Folds one input report (report id first) into the latest state."""
        with self._lock:
            previous = self._state
            self._state = self.parse_report(bytes(report), previous)
            self._buttons_seen |= self._state.buttons
            self._buttons_pressed |= self._state.buttons & ~previous.buttons
            self._event_presses |= self._state.buttons & ~previous.buttons

    def take_state(self) -> tuple[Any, int]:
        """The latest state with every button down since the last take, and those newly pressed."""
        with self._lock:
            state = self._state._replace(buttons=self._state.buttons | self._buttons_seen)
            pressed = self._buttons_pressed
            self._buttons_seen = self._buttons_pressed = 0
        return state, pressed

    def take_presses(self) -> int:
        """Buttons that went down since the last call (kept apart from :meth:`take_state`'s, so
        episode buttons are seen also between episodes, when nobody asks for actions)."""
        with self._lock:
            pressed, self._event_presses = self._event_presses, 0
        return pressed

    def episode_events(self, buttons: dict[str, int]) -> set[str]:
        """The events of `buttons` (event -> button bit) pressed since the last call."""
        pressed = self.take_presses()
        return {event for event, bit in buttons.items() if pressed >> bit & 1}

    def _read_loop(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._handle.read(64, self.read_timeout_ms)
            except (OSError, ValueError) as error:  # unplugged, or closed under us
                with self._lock:
                    self._state = self.empty_state()  # a lost device must not keep the arm moving
                    self.lost = True
                if not self._stop.is_set():
                    warnings.warn(f"{self.name} stopped reporting ({error}); it no longer "
                                  "intervenes", stacklevel=1)
                return
            if data:
                self.feed(data)

    def reset(self) -> None:
        self.take_state()  # clicks from the last episode do not carry over

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
            self._thread = None
        if self._handle is not None:
            self._handle.close()
            self._handle = None
