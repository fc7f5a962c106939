"""What the Dynamixel and Feetech arm drivers share: joint specs, angles, limits, retries, errors.

Both buses put several servos on one half-duplex serial line behind a USB adapter, and both
vendors' SDKs (dynamixel-sdk, feetech-servo-sdk) have the same shape: a ``PortHandler`` (pyserial
underneath), a packet handler with ``ping`` / ``readNByteTxRx`` / ``writeNByteTxRx`` returning
``(value, comm result, status error)``, ``GroupSyncWrite``, and ``COMM_*`` result codes with the
same names. :class:`ServoArm` is written against that shape once; a bus driver
(:class:`robot_infra.dynamixel.driver.DynamixelArm`, :class:`robot_infra.feetech.driver.FeetechArm`)
fills in its control table addresses, how a position is encoded, how a sync read is done and how
a status error byte reads.

Angles: a joint's angle in radians is ``sign * (ticks - zero_ticks) * 2 pi / 4096`` (4096 ticks
per turn on X-series Dynamixels and on STS3215s); ``zero_ticks`` is the reading at the joint's zero
and ``sign`` flips a servo mounted the other way round. A goal is rejected
(:class:`PositionLimitError`, nothing is sent) when any joint is outside the intersection of its
configured limits and the servo's own position limits (read at :meth:`ServoArm.open`).

Errors name the port, the motor(s) and the operation. Reads and writes of single items are
idempotent and are retried ``retries`` times after a timeout or a corrupt reply, since a single
corrupt packet on a noisy bus is not unusual; a status error from the servo, or a port that
stopped working (adapter unplugged), is raised at once. Before a retry the driver waits a moment
and drops what arrived (a late reply to the failed attempt must not answer the next one), and puts
back the port's line settings if another program changed them (a ``stty``, or ModemManager
probing a ``/dev/ttyACM*`` device, turns on output processing that rewrites byte 0x0A in every
packet, so the servos stop answering until the settings are restored); that is logged.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

try:
    import termios

    # What a dead port raises: pyserial's SerialException is an OSError; its flush() (tcdrain)
    # raises termios.error, which is not.
    _PORT_FAILURES: tuple[type[BaseException], ...] = (OSError, termios.error)
except ImportError:  # not POSIX
    termios = None
    _PORT_FAILURES = (OSError,)

log = logging.getLogger(__name__)

TICKS_PER_TURN = 4096
MAX_ID = 0xFC  # 252; 253 and 254 (broadcast) are reserved on both buses
EMULATOR_PACKETS_KEPT = 100_000  # instruction packets a bus emulator keeps for inspection (it may run for hours)

LATE_REPLY_S = 0.02  # how long a retry waits for a late reply to the failed attempt, to drop it

PERMISSION_HINT = ("On Linux the serial port needs permission: add yourself to the 'dialout' group "
                   "(sudo usermod -aG dialout $USER, then log in again).")


class ServoBusError(RuntimeError):
    """A bus or servo failure; the message names the port, motors and operation."""


class BusTimeoutError(ServoBusError):
    """No status packet arrived in time."""


class BusChecksumError(ServoBusError):
    """A status packet arrived corrupt (wrong checksum, truncated)."""


class ServoStatusError(ServoBusError):
    """A servo answered with error flags in its status packet."""


class LimitError(ServoBusError, ValueError):
    """A goal outside a joint's limits; nothing was written."""


@dataclasses.dataclass(frozen=True)
class BusErrors:
    """The exception classes one bus raises (each a subclass of the matching one above)."""

    base: type[ServoBusError]
    timeout: type[BusTimeoutError]
    checksum: type[BusChecksumError]
    motor: type[ServoStatusError]
    limit: type[LimitError]


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
        if not 0 <= self.id <= MAX_ID:
            raise ValueError(f"motor {self.name!r}: id {self.id} is outside 0..{MAX_ID}")
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


def import_sdk(module: str, package: str, bus: str, error: type[ServoBusError]):
    """The vendor SDK `module`, or `error` saying which pip package provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as cause:
        raise error(
            f"the {bus} driver needs {package} (pip install {package} pyserial, or this "
            f"package's [robot] extra); importing it failed: {cause}") from cause


def motors_label(ids: Sequence[int]) -> str:
    """"motor 3" or "motors 1, 2, 3"."""
    return "motor " + str(ids[0]) if len(ids) == 1 else "motors " + ", ".join(map(str, ids))


# An attempt at one bus transaction: () -> (value, comm result, status error byte). On failure
# the value may be the ids of the servos that failed (a sync read knows which reply was missing).
Attempt = Callable[[], tuple[Any, int, int]]


class ServoArm:
    """Servos on one bus; open with :meth:`open` or as a context manager.

    Args:
        port: serial device, e.g. ``/dev/ttyUSB0`` or ``/dev/serial/by-id/usb-FTDI_...``.
        motors: the joints, in the order positions are read and written (Motor or mappings).
        baudrate: the servos' baud rate.
        timeout_ms: how long to wait for a reply; None keeps the SDK's own (about 34 ms plus
            transfer time, which assumes a USB latency timer of at most 16 ms).
        retries: extra attempts after a timeout or corrupt reply before raising.
    """

    # Filled in by each bus driver.
    BUS: ClassVar[str]  # "Dynamixel", "Feetech": the bus's name in messages
    ERRORS: ClassVar[BusErrors]
    ADDR_TORQUE_ENABLE: ClassVar[int]
    ADDR_GOAL_POSITION: ClassVar[int]
    ADDR_PRESENT_POSITION: ClassVar[int]
    POSITION_SIZE: ClassVar[int]  # bytes of a position item

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
            raise ValueError(f"a {type(self).__name__} needs at least one motor")
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
        self._sync_read_groups: dict[int, Any] = {}  # a bus's reusable sync-read objects by address
        self.models: dict[str, int] = {}
        self._line: list | None = None  # the port's termios settings as opened (raw)
        self.line_restores = 0  # times another program's change to those settings was undone

    # -- what a bus driver provides ---------------------------------------------------------------

    def _import_sdk(self):
        raise NotImplementedError

    def _make_packet_handler(self, sdk):
        raise NotImplementedError

    def _read_position_limits(self) -> tuple[np.ndarray, np.ndarray]:
        """(low, high): (n,) int64 position limits stored in each servo, ticks."""
        raise NotImplementedError

    def _sync_read_once(self, address: int) -> tuple[Any, int, int]:
        """One sync read of the position-sized item at `address`: an :data:`Attempt` whose value
        is the (n,) int64 decoded items in motor order."""
        raise NotImplementedError

    def _position_bytes(self, value: int) -> list[int]:
        """A position as the bytes of the servo's position item."""
        raise NotImplementedError

    def _describe_status_error(self, error: int) -> str:
        return self._packet_handler.getRxPacketError(error)

    # -- lifetime ---------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._port_handler is not None

    def open(self) -> ServoArm:
        """Opens the port, pings every motor and narrows the limits to the servos' own."""
        if self.is_open:
            return self
        sdk = self._import_sdk()
        port_handler = _make_port_handler(sdk, self.port, self.timeout_ms)
        try:
            opened = port_handler.setBaudRate(self.baudrate)  # opens the port at that rate
        except Exception as error:  # pyserial raises SerialException (an OSError) and others
            raise self.ERRORS.base(f"could not open serial port {self.port!r}: {error}. Is the "
                                   f"adapter plugged in? {PERMISSION_HINT}") from error
        if not opened:
            raise self.ERRORS.base(f"could not open serial port {self.port!r}: the {self.BUS} SDK "
                                   f"does not support {self.baudrate} baud")
        self._sdk, self._port_handler = sdk, port_handler
        self._packet_handler = self._make_packet_handler(sdk)
        self._line = self._line_settings()
        try:
            missing = []
            for motor in self.motors:
                try:
                    self.models[motor.name] = self.ping(motor.id)
                except BusTimeoutError:
                    missing.append(motor)
            if missing:
                raise self.ERRORS.timeout(
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
        self._sync_read_groups = {}

    def __enter__(self) -> ServoArm:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- single motors ----------------------------------------------------------------------------

    def ping(self, motor_id: int) -> int:
        """The model number of motor `motor_id`."""
        return self._retry(f"ping {self._label(motor_id)}", [motor_id],
                           lambda: self._packet_handler.ping(self._port_handler, motor_id))

    def read_item(self, motor: str | int, address: int, size: int) -> int:
        """An unsigned control-table item of 1, 2 or 4 bytes (in the bus's byte order)."""
        motor_id = self._id(motor)
        reader = {1: "read1ByteTxRx", 2: "read2ByteTxRx", 4: "read4ByteTxRx"}[size]
        return self._retry(f"read address {address} ({size} bytes) of {self._label(motor_id)}",
                           [motor_id], lambda: getattr(self._packet_handler, reader)(
                               self._port_handler, motor_id, address))

    def write_item(self, motor: str | int, address: int, size: int, value: int) -> None:
        """Writes an unsigned control-table item of 1, 2 or 4 bytes and waits for the reply."""
        motor_id = self._id(motor)
        writer = {1: "write1ByteTxRx", 2: "write2ByteTxRx", 4: "write4ByteTxRx"}[size]

        def attempt():
            result, error = getattr(self._packet_handler, writer)(
                self._port_handler, motor_id, address, int(value) & ((1 << (8 * size)) - 1))
            return None, result, error

        self._retry(f"write {value} to address {address} of {self._label(motor_id)}", [motor_id],
                    attempt)

    def set_torque(self, enabled: bool, motors: Sequence[str | int] | None = None) -> None:
        """Torque on (the servos hold their goal) or off (they turn freely) for `motors` (all)."""
        for motor in self.ids if motors is None else motors:
            self.write_item(motor, self.ADDR_TORQUE_ENABLE, 1, int(bool(enabled)))

    def torque_enabled(self) -> np.ndarray:
        """(n,) bool, in motor order."""
        return np.array([bool(self.read_item(i, self.ADDR_TORQUE_ENABLE, 1)) for i in self.ids])

    # -- all joints -------------------------------------------------------------------------------

    def read_positions(self) -> np.ndarray:
        """(n,) float64 present joint angles in radians, in motor order (one sync read)."""
        return ticks_to_radians(self.read_present_ticks(), self._zero, self._sign)

    def read_present_ticks(self) -> np.ndarray:
        """(n,) int64 raw present positions in ticks, in motor order (one sync read)."""
        return self.read_ticks(self.ADDR_PRESENT_POSITION)

    def read_goal_positions(self) -> np.ndarray:
        """(n,) float64 goal joint angles in radians."""
        return ticks_to_radians(self.read_ticks(self.ADDR_GOAL_POSITION), self._zero, self._sign)

    def write_goal_positions(self, angles: np.ndarray) -> None:
        """Sends (n,) goal angles in radians to all joints in one sync write.

        Raises the bus's PositionLimitError before sending anything if any joint is outside its
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
            raise self.ERRORS.limit(f"goal positions outside the joint limits on {self.port}, "
                                    "nothing was written: " + "; ".join(lines))
        self.write_ticks(self.ADDR_GOAL_POSITION, radians_to_ticks(angles, self._zero, self._sign))

    def read_ticks(self, address: int) -> np.ndarray:
        """(n,) int64 position-sized items at `address` of every motor (one sync read)."""
        return self._retry(f"sync read of address {address}", self.ids,
                           lambda: self._sync_read_once(address))

    def write_ticks(self, address: int, values: Sequence[int]) -> None:
        """Writes position-sized `values` (motor order) at `address` of every motor (one sync write).

        No limit checks here: :meth:`write_goal_positions` is the checked way to move.
        """
        self._require_open()
        group = self._sdk.GroupSyncWrite(self._port_handler, self._packet_handler, address,
                                         self.POSITION_SIZE)
        for motor_id, value in zip(self.ids, values, strict=True):
            group.addParam(motor_id, self._position_bytes(int(value)))
        self._retry(f"sync write of address {address}", self.ids,
                    lambda: (None, group.txPacket(), 0))

    # -- internals --------------------------------------------------------------------------------

    def _narrow_limits_to_motors(self) -> None:
        """Intersects the configured limits with the position limits stored in each servo."""
        low, high = self._read_position_limits()
        a = ticks_to_radians(low, self._zero, self._sign)
        b = ticks_to_radians(high, self._zero, self._sign)
        self.lower = np.maximum(self.lower, np.minimum(a, b))
        self.upper = np.minimum(self.upper, np.maximum(a, b))
        empty = self.lower >= self.upper
        if empty.any():
            i = int(np.flatnonzero(empty)[0])
            raise self.ERRORS.base(
                f"motor {self.names[i]!r} (id {self.ids[i]}) on {self.port}: its position limits "
                f"({low[i]}..{high[i]} ticks) and the configured angle limits do not overlap; "
                "check zero_ticks, sign and min/max_angle")

    def _id(self, motor: str | int) -> int:
        if isinstance(motor, str):
            if motor not in self.names:
                raise KeyError(f"no motor named {motor!r}; motors are {self.names}")
            return self.ids[self.names.index(motor)]
        return int(motor)

    def _label(self, motor_id: int) -> str:
        """"motor 3 ('elbow')", or "motor 3" for an id that is not one of the joints."""
        name = self.names[self.ids.index(motor_id)] if motor_id in self.ids else None
        return f"motor {motor_id}" + (f" ({name!r})" if name else "")

    def _require_open(self) -> None:
        if not self.is_open:
            raise self.ERRORS.base(f"the {self.BUS} port {self.port} is not open (call open() first)")

    def _retry(self, what: str, ids: Sequence[int], attempt: Attempt) -> Any:
        """Runs `attempt` until it succeeds or the retries are used up, then raises the bus's error."""
        self._require_open()
        sdk, errors = self._sdk, self.ERRORS
        tries = 0
        while tries <= self.retries:
            tries += 1
            try:
                if tries > 1:
                    self._recover_line()
                try:
                    value, result, error = attempt()
                except IndexError:  # the SDK indexes a status packet shorter than what it asked for
                    value, result, error = None, sdk.COMM_RX_CORRUPT, 0
            except _PORT_FAILURES as cause:  # the port itself went away
                self._port_handler.is_using = False  # the SDK leaves it set when pyserial raises
                raise errors.base(
                    f"{what} on {self.port}{self._ids_text(ids)} failed: the serial port stopped "
                    f"working ({cause}). Was the adapter unplugged or the bus powered off?"
                ) from cause
            if result == sdk.COMM_SUCCESS and not error:
                return value
            culprits = value if result != sdk.COMM_SUCCESS or error else None
            if result == sdk.COMM_SUCCESS:
                raise errors.motor(
                    f"{what} on {self.port}{self._culprit_text(culprits)}: the motor answered with "
                    f"error {error:#04x}: {self._describe_status_error(error)}")
            if result not in (sdk.COMM_RX_TIMEOUT, sdk.COMM_RX_CORRUPT, sdk.COMM_RX_FAIL):
                break  # port busy or not writable: retrying the same thing will not help
        attempts = f"after {tries} attempt{'s' if tries > 1 else ''}"
        base = f"{what} on {self.port}{self._ids_text(ids)} failed {attempts}: "
        if result == sdk.COMM_RX_TIMEOUT:
            raise errors.timeout(
                base + f"no reply (timeout){self._culprit_text(culprits)}. Is the motor powered, "
                f"is the id right, does the bus run at {self.baudrate} baud?")
        if result == sdk.COMM_RX_CORRUPT:
            raise errors.checksum(
                base + f"corrupt reply (bad checksum or truncated packet){self._culprit_text(culprits)}. "
                "Check cabling and that no other program uses the port.")
        raise errors.base(base + self._packet_handler.getTxRxResult(result))

    def _line_settings(self) -> list | None:
        """The port's termios settings (None where there are none: not POSIX, not a tty)."""
        fd = getattr(self._port_handler.ser, "fd", None)
        if termios is None or fd is None:
            return None
        try:
            return termios.tcgetattr(fd)
        except termios.error:
            return None

    def _recover_line(self) -> None:
        """Before a retry: restores the port's settings if they were changed behind the driver's
        back, then waits for a late reply to the failed attempt and drops it."""
        now = self._line_settings()
        if self._line is not None and now is not None and now != self._line:
            termios.tcsetattr(self._port_handler.ser.fd, termios.TCSANOW, self._line)
            self.line_restores += 1
            log.warning("%s: another program changed the serial port's settings (%s); put back the "
                        "raw settings it was opened with. Stop the other program (on Linux often "
                        "ModemManager probing /dev/ttyACM*: systemctl stop ModemManager).",
                        self.port, describe_line_change(self._line, now) or "baud rate or control characters")
        time.sleep(LATE_REPLY_S)
        self._port_handler.ser.reset_input_buffer()

    @staticmethod
    def _ids_text(ids: Sequence[int]) -> str:
        """" (motors 1, 2, 3)" for an operation on several motors; a single one is in `what`."""
        return f" ({motors_label(ids)})" if len(ids) > 1 else ""

    def _culprit_text(self, culprits: Any) -> str:
        if not isinstance(culprits, list | tuple) or not culprits:
            return ""
        return " from " + ", ".join(self._label(int(i)) for i in culprits)


# The termios flags whose change breaks a binary protocol: (settings index, flag names).
_LINE_FLAGS = ((0, ("IXON", "IXOFF", "ICRNL", "INLCR", "IGNCR", "ISTRIP")), (1, ("OPOST", "ONLCR", "OCRNL")),
               (3, ("ICANON", "ECHO", "ISIG", "IEXTEN")))


def describe_line_change(before: list, after: list) -> str:
    """The termios flags that break a binary protocol and are on in `after` but not in `before`
    (two tcgetattr() results), e.g. "+OPOST +ICANON"; "" when there is none."""
    return " ".join(f"+{name}" for index, names in _LINE_FLAGS for name in names
                    if after[index] & ~before[index] & getattr(termios, name, 0))


LATE_READS = 256  # reads a reply sitting in the buffer may take after its deadline (a noisy line must end)


def _make_port_handler(sdk, port: str, timeout_ms: float | None):
    class PortHandler(sdk.PortHandler):
        """The SDK's port with its reply timeout measured as it should be: on a monotonic clock
        (the SDK's is the wall clock, which NTP can step), and never declared while the reply
        sits unread in the input buffer (the SDK looks at the clock after an empty read, so a
        thread that was not scheduled in between timed out on a reply that had arrived). With
        `timeout_ms`, a fixed timeout instead of the SDK's latency guess."""

        _late_reads = 0

        def getCurrentTime(self):  # the SDK's (camelCase) names, milliseconds
            return time.monotonic() * 1000.0

        def setPacketTimeout(self, packet_length):
            self._late_reads = 0
            if timeout_ms is None:
                super().setPacketTimeout(packet_length)
            else:
                super().setPacketTimeoutMillis(timeout_ms)

        def setPacketTimeoutMillis(self, msec):
            self._late_reads = 0
            super().setPacketTimeoutMillis(msec)

        def isPacketTimeout(self):
            if self.getTimeSinceStart() > self.packet_timeout and self._late_reads < LATE_READS \
                    and self.ser.in_waiting:
                self._late_reads += 1
                return False  # the reply is here: let the SDK read it
            return super().isPacketTimeout()

    return PortHandler(port)


def _close_quietly(port_handler) -> None:
    try:
        if port_handler.ser is not None:
            port_handler.closePort()
    except Exception:  # closing a port that failed half-way
        pass
