"""A Dynamixel arm on dynamixel-sdk (Protocol 2.0, X-series control table).

:class:`DynamixelArm` talks to several motors on one serial bus (a U2D2 or similar adapter):
ping, torque on/off, present and goal positions of all joints at once (GroupSyncRead /
GroupSyncWrite), single control-table items, and joint limits checked before anything is
written. dynamixel-sdk (and pyserial under it) is imported when the port is opened, so the
module imports without the [robot] extra.

Angles: a joint's angle in radians is ``sign * (ticks - zero_ticks) * 2 pi / 4096`` (4096 ticks
per turn on X-series motors); ``zero_ticks`` is the reading at the joint's zero and ``sign``
flips a motor mounted the other way round. A goal is rejected (:class:`PositionLimitError`,
nothing is sent) when any joint is outside the intersection of its configured limits and the
motor's own position limits (control table items 48 / 52, read at :meth:`DynamixelArm.open`).

Communication failures raise :class:`DynamixelError` subclasses naming the port, the motor(s)
and the operation: :class:`DynamixelTimeoutError` when no reply arrives in time,
:class:`DynamixelChecksumError` for a corrupt reply, :class:`MotorError` when a motor answers
with an error in its status packet. Reads and writes are retried ``retries`` times first (all of
them are idempotent), since a single corrupt packet on a noisy bus is not unusual.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

TICKS_PER_TURN = 4096
PROTOCOL_VERSION = 2.0

# X-series control table addresses and sizes used here.
ADDR_MODEL_NUMBER = 0
ADDR_MAX_POSITION_LIMIT, ADDR_MIN_POSITION_LIMIT = 48, 52
ADDR_TORQUE_ENABLE = 64
ADDR_GOAL_POSITION = 116
ADDR_PRESENT_POSITION = 132
POSITION_SIZE = 4

PERMISSION_HINT = ("On Linux the serial port needs permission: add yourself to the 'dialout' group "
                   "(sudo usermod -aG dialout $USER, then log in again).")


class DynamixelError(RuntimeError):
    """A Dynamixel bus or motor failure; the message names the port, motors and operation."""


class DynamixelTimeoutError(DynamixelError):
    """No status packet arrived in time."""


class DynamixelChecksumError(DynamixelError):
    """A status packet arrived corrupt (wrong CRC, truncated)."""


class MotorError(DynamixelError):
    """A motor answered with an error in its status packet."""


class PositionLimitError(DynamixelError, ValueError):
    """A goal outside a joint's limits; nothing was written."""


@dataclasses.dataclass(frozen=True)
class Motor:
    """One joint: its name, bus id, angle convention and limits (radians, joint frame)."""

    name: str
    id: int
    sign: float = 1.0
    zero_ticks: int = TICKS_PER_TURN // 2
    min_angle: float = -math.pi
    max_angle: float = math.pi

    def __post_init__(self):
        if self.sign not in (1.0, -1.0):
            raise ValueError(f"motor {self.name!r}: sign must be +1 or -1, got {self.sign}")
        if not 0 <= self.id < 0xFD:
            raise ValueError(f"motor {self.name!r}: id {self.id} is outside 0..252")
        if not self.min_angle < self.max_angle:
            raise ValueError(f"motor {self.name!r}: min_angle {self.min_angle} must be below "
                             f"max_angle {self.max_angle}")

    @classmethod
    def coerce(cls, spec: Motor | Mapping[str, Any]) -> Motor:
        """A Motor from a Motor or a mapping of its fields (e.g. a ConfigDict from a config)."""
        return spec if isinstance(spec, Motor) else cls(**dict(spec))


def ticks_to_radians(ticks: np.ndarray, zero_ticks: np.ndarray, sign: np.ndarray) -> np.ndarray:
    return sign * (np.asarray(ticks, np.float64) - zero_ticks) * (2.0 * math.pi / TICKS_PER_TURN)


def radians_to_ticks(angles: np.ndarray, zero_ticks: np.ndarray, sign: np.ndarray) -> np.ndarray:
    ticks = zero_ticks + sign * np.asarray(angles, np.float64) * (TICKS_PER_TURN / (2.0 * math.pi))
    return np.round(ticks).astype(np.int64)


def import_sdk():
    try:
        import dynamixel_sdk
    except ImportError as error:
        raise DynamixelError(
            "the Dynamixel driver needs dynamixel-sdk (pip install dynamixel-sdk pyserial, or this "
            f"package's [robot] extra); importing it failed: {error}") from error
    return dynamixel_sdk


def _to_int32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def _int32_bytes(value: int) -> list[int]:
    return list(int(value & 0xFFFFFFFF).to_bytes(4, "little"))


class DynamixelArm:
    """Motors on one Protocol 2.0 bus; open with :meth:`open` or as a context manager.

    Args:
        port: serial device, e.g. ``/dev/ttyUSB0`` or ``/dev/serial/by-id/usb-FTDI_...``.
        motors: the joints, in the order positions are read and written (Motor or mappings).
        baudrate: the motors' baud rate (X-series default 57600; 1000000 is common for arms).
        timeout_ms: how long to wait for a reply; None keeps the SDK's own (about 34 ms plus
            transfer time, which assumes a USB latency timer of at most 16 ms).
        retries: extra attempts after a timeout or corrupt reply before raising.
    """

    def __init__(
        self,
        port: str,
        motors: Sequence[Motor | Mapping[str, Any]],
        baudrate: int = 1_000_000,
        timeout_ms: float | None = None,
        retries: int = 2,
    ):
        self.port = str(port)
        self.motors = tuple(Motor.coerce(m) for m in motors)
        if not self.motors:
            raise ValueError("a DynamixelArm needs at least one motor")
        names = [m.name for m in self.motors]
        ids = [m.id for m in self.motors]
        if len(set(names)) != len(names) or len(set(ids)) != len(ids):
            raise ValueError(f"motor names and ids must be distinct, got {list(zip(names, ids, strict=True))}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.baudrate, self.timeout_ms, self.retries = int(baudrate), timeout_ms, int(retries)
        self.ids = tuple(ids)
        self.names = tuple(names)
        self._zero = np.array([m.zero_ticks for m in self.motors], np.float64)
        self._sign = np.array([m.sign for m in self.motors], np.float64)
        self.lower = np.array([m.min_angle for m in self.motors], np.float64)
        self.upper = np.array([m.max_angle for m in self.motors], np.float64)
        self._sdk = self._port_handler = self._packet_handler = None
        self._sync_read: dict[int, Any] = {}
        self.models: dict[str, int] = {}

    # -- lifetime ---------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._port_handler is not None

    def open(self) -> DynamixelArm:
        """Opens the port, pings every motor and narrows the limits to the motors' own."""
        if self.is_open:
            return self
        sdk = import_sdk()
        port_handler = _make_port_handler(sdk, self.port, self.timeout_ms)
        try:
            opened = port_handler.setBaudRate(self.baudrate)  # opens the port at that rate
        except Exception as error:  # pyserial raises SerialException (an OSError) and others
            raise DynamixelError(f"could not open serial port {self.port!r}: {error}. Is the "
                                 f"adapter plugged in? {PERMISSION_HINT}") from error
        if not opened:
            raise DynamixelError(f"could not open serial port {self.port!r}: dynamixel-sdk does "
                                 f"not support {self.baudrate} baud")
        self._sdk, self._port_handler = sdk, port_handler
        self._packet_handler = sdk.PacketHandler(PROTOCOL_VERSION)
        try:
            missing = []
            for motor in self.motors:
                try:
                    self.models[motor.name] = self.ping(motor.id)
                except DynamixelTimeoutError:
                    missing.append(motor)
            if missing:
                raise DynamixelTimeoutError(
                    f"on {self.port}: no reply to ping from "
                    + ", ".join(f"{m.name!r} (id {m.id})" for m in missing)
                    + f" at {self.baudrate} baud; check power, cabling, ids and baud rate")
            self._narrow_limits_to_motors()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Closes the port. Torque is left as it is (an arm holding a load does not drop)."""
        if self._port_handler is not None:
            _close_quietly(self._port_handler)
        self._port_handler = self._packet_handler = None
        self._sync_read = {}

    def __enter__(self) -> DynamixelArm:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- single motors ----------------------------------------------------------------------------

    def ping(self, motor_id: int) -> int:
        """The model number of motor `motor_id`."""
        return self._retry(f"ping motor {motor_id}", [motor_id],
                           lambda: self._packet_handler.ping(self._port_handler, motor_id))

    def read_item(self, motor: str | int, address: int, size: int) -> int:
        """An unsigned control-table item of 1, 2 or 4 bytes."""
        motor_id = self._id(motor)
        reader = {1: "read1ByteTxRx", 2: "read2ByteTxRx", 4: "read4ByteTxRx"}[size]
        return self._retry(f"read address {address} ({size} bytes) of motor {motor_id}", [motor_id],
                           lambda: getattr(self._packet_handler, reader)(
                               self._port_handler, motor_id, address))

    def write_item(self, motor: str | int, address: int, size: int, value: int) -> None:
        """Writes a control-table item of 1, 2 or 4 bytes and waits for the motor's reply."""
        motor_id = self._id(motor)
        writer = {1: "write1ByteTxRx", 2: "write2ByteTxRx", 4: "write4ByteTxRx"}[size]

        def attempt():
            result, error = getattr(self._packet_handler, writer)(
                self._port_handler, motor_id, address, int(value) & ((1 << (8 * size)) - 1))
            return None, result, error

        self._retry(f"write {value} to address {address} of motor {motor_id}", [motor_id], attempt)

    def set_torque(self, enabled: bool, motors: Sequence[str | int] | None = None) -> None:
        """Torque on (the motors hold their goal) or off (they turn freely) for `motors` (all)."""
        for motor in self.ids if motors is None else motors:
            self.write_item(motor, ADDR_TORQUE_ENABLE, 1, int(bool(enabled)))

    def torque_enabled(self) -> np.ndarray:
        """(n,) bool, in motor order."""
        return np.array([bool(self.read_item(i, ADDR_TORQUE_ENABLE, 1)) for i in self.ids])

    # -- all joints -------------------------------------------------------------------------------

    def read_positions(self) -> np.ndarray:
        """(n,) float64 present joint angles in radians, in motor order (one sync read)."""
        return ticks_to_radians(self.read_ticks(ADDR_PRESENT_POSITION), self._zero, self._sign)

    def read_goal_positions(self) -> np.ndarray:
        """(n,) float64 goal joint angles in radians."""
        return ticks_to_radians(self.read_ticks(ADDR_GOAL_POSITION), self._zero, self._sign)

    def write_goal_positions(self, angles: np.ndarray) -> None:
        """Sends (n,) goal angles in radians to all joints in one sync write.

        Raises :class:`PositionLimitError` before sending anything if any joint is outside its
        limits (or a value is not finite).
        """
        angles = np.asarray(angles, np.float64)
        if angles.shape != (len(self.motors),):
            raise ValueError(f"expected {len(self.motors)} goal angles ({', '.join(self.names)}), "
                             f"got shape {angles.shape}")
        bad = ~np.isfinite(angles) | (angles < self.lower - 1e-9) | (angles > self.upper + 1e-9)
        if bad.any():
            lines = [f"{self.names[i]!r} (id {self.ids[i]}): {angles[i]:.4f} rad, limits "
                     f"[{self.lower[i]:.4f}, {self.upper[i]:.4f}]" for i in np.flatnonzero(bad)]
            raise PositionLimitError(f"goal positions outside the joint limits on {self.port}, "
                                     "nothing was written: " + "; ".join(lines))
        self.write_ticks(ADDR_GOAL_POSITION, radians_to_ticks(angles, self._zero, self._sign))

    def read_ticks(self, address: int) -> np.ndarray:
        """(n,) int64 signed 4-byte items at `address` of every motor (one GroupSyncRead)."""
        self._require_open()
        group = self._sync_read.get(address)
        if group is None:
            group = self._sdk.GroupSyncRead(self._port_handler, self._packet_handler, address,
                                            POSITION_SIZE)
            for motor_id in self.ids:
                group.addParam(motor_id)
            self._sync_read[address] = group

        def attempt():
            result = group.txRxPacket()
            if result == self._sdk.COMM_SUCCESS:
                missing = [i for i in self.ids if not group.isAvailable(i, address, POSITION_SIZE)]
                if missing:
                    return None, self._sdk.COMM_RX_CORRUPT, 0
            return None, result, 0

        self._retry(f"sync read of address {address}", self.ids, attempt)
        return np.array([_to_int32(group.getData(i, address, POSITION_SIZE)) for i in self.ids],
                        np.int64)

    def write_ticks(self, address: int, values: Sequence[int]) -> None:
        """Writes signed 4-byte `values` (motor order) at `address` of every motor (GroupSyncWrite).

        No limit checks here: :meth:`write_goal_positions` is the checked way to move.
        """
        self._require_open()
        group = self._sdk.GroupSyncWrite(self._port_handler, self._packet_handler, address,
                                         POSITION_SIZE)
        for motor_id, value in zip(self.ids, values, strict=True):
            group.addParam(motor_id, _int32_bytes(int(value)))
        self._retry(f"sync write of address {address}", self.ids,
                    lambda: (None, group.txPacket(), 0))

    # -- internals --------------------------------------------------------------------------------

    def _narrow_limits_to_motors(self) -> None:
        """Intersects the configured limits with the position limits stored in each motor."""
        high = np.array([_to_int32(self.read_item(i, ADDR_MAX_POSITION_LIMIT, 4)) for i in self.ids])
        low = np.array([_to_int32(self.read_item(i, ADDR_MIN_POSITION_LIMIT, 4)) for i in self.ids])
        a = ticks_to_radians(low, self._zero, self._sign)
        b = ticks_to_radians(high, self._zero, self._sign)
        self.lower = np.maximum(self.lower, np.minimum(a, b))
        self.upper = np.minimum(self.upper, np.maximum(a, b))
        empty = self.lower >= self.upper
        if empty.any():
            i = int(np.flatnonzero(empty)[0])
            raise DynamixelError(
                f"motor {self.names[i]!r} (id {self.ids[i]}) on {self.port}: its position limits "
                f"({low[i]}..{high[i]} ticks) and the configured angle limits do not overlap; "
                "check zero_ticks, sign and min/max_angle")

    def _id(self, motor: str | int) -> int:
        if isinstance(motor, str):
            if motor not in self.names:
                raise KeyError(f"no motor named {motor!r}; motors are {self.names}")
            return self.ids[self.names.index(motor)]
        return int(motor)

    def _require_open(self) -> None:
        if not self.is_open:
            raise DynamixelError(f"the Dynamixel port {self.port} is not open (call open() first)")

    def _retry(self, what: str, ids: Sequence[int], attempt) -> Any:
        """Runs `attempt` (-> (value, comm result, status error)) until it succeeds or retries end."""
        self._require_open()
        sdk = self._sdk
        tries = 0
        while tries <= self.retries:
            tries += 1
            value, result, error = attempt()
            if result == sdk.COMM_SUCCESS and not error:
                return value
            if result == sdk.COMM_SUCCESS:
                raise MotorError(
                    f"{what} on {self.port}: the motor answered with error {error:#04x}: "
                    f"{self._packet_handler.getRxPacketError(error)}")
            if result not in (sdk.COMM_RX_TIMEOUT, sdk.COMM_RX_CORRUPT, sdk.COMM_RX_FAIL):
                break  # port busy or not writable: retrying the same thing will not help
        motors = "motor " + str(ids[0]) if len(ids) == 1 else "motors " + ", ".join(map(str, ids))
        attempts = f"after {tries} attempt{'s' if tries > 1 else ''}"
        base = f"{what} on {self.port} ({motors}) failed {attempts}: "
        if result == sdk.COMM_RX_TIMEOUT:
            raise DynamixelTimeoutError(
                base + "no reply (timeout). Is the motor powered, is the id right, does the bus "
                f"run at {self.baudrate} baud?")
        if result == sdk.COMM_RX_CORRUPT:
            raise DynamixelChecksumError(
                base + "corrupt reply (bad checksum or truncated packet). Check cabling and "
                "that no other program uses the port.")
        raise DynamixelError(base + self._packet_handler.getTxRxResult(result))


def _make_port_handler(sdk, port: str, timeout_ms: float | None):
    if timeout_ms is None:
        return sdk.PortHandler(port)

    class PortHandler(sdk.PortHandler):
        """The SDK's port with a fixed reply timeout instead of one derived from its latency guess."""

        def setPacketTimeout(self, packet_length):  # the SDK's (camelCase) name
            self.setPacketTimeoutMillis(timeout_ms)

    return PortHandler(port)


def _close_quietly(port_handler) -> None:
    try:
        if port_handler.ser is not None:
            port_handler.closePort()
    except Exception:  # closing a port that failed half-way
        pass
