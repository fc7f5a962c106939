"""A serial-port emulator of Dynamixel motors speaking Protocol 2.0, for tests without hardware.

:class:`DynamixelEmulator` opens a pseudo-terminal pair (``os.openpty``). The driver, through
dynamixel-sdk's ``PortHandler`` and pyserial, opens the slave side (:attr:`port`, a
``/dev/pts/N`` path) exactly as it would open ``/dev/ttyUSB0``; a thread here reads the master side,
parses instruction packets (:mod:`robot_infra.dynamixel.protocol`), and answers like a bus of
X-series motors would:

- PING: model number and firmware version; a broadcast ping is answered by every motor.
- READ / WRITE over a control table per motor (the X-series layout below). Writes to read-only
  items, to EEPROM items while torque is on, or past the table's end get an access error; a
  goal position outside the motor's position limits gets a data-limit error and is not stored.
- SYNC_READ (one status packet per listed motor, in the listed order) and SYNC_WRITE (no reply).
- An instruction packet with a wrong CRC gets a status packet with the CRC error.

Present position moves toward the goal position at :attr:`EmulatedMotor.speed` ticks per
second while torque is on; with torque off it stays where :meth:`DynamixelEmulator.set_present`
puts it (a person moving a leader arm by hand).

Faults for tests (:meth:`DynamixelEmulator.inject_fault`): ``"corrupt_crc"`` flips the CRC of
every reply, ``"no_reply"`` stays silent (the driver times out); either for all motors or some.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import select
import threading
import time
import tty
from collections.abc import Iterable, Sequence

from robot_infra.dynamixel.protocol import (
    BROADCAST_ID,
    Instruction,
    Packet,
    PacketReader,
    StatusError,
    encode_status,
)
from robot_infra.servo_bus import EMULATOR_PACKETS_KEPT

# X-series control table (XM430 / XL430 / XL330 share these addresses): name -> (address, size).
CONTROL_TABLE: dict[str, tuple[int, int]] = {
    "model_number": (0, 2),
    "model_information": (2, 4),
    "firmware_version": (6, 1),
    "id": (7, 1),
    "baud_rate": (8, 1),
    "return_delay_time": (9, 1),
    "drive_mode": (10, 1),
    "operating_mode": (11, 1),
    "max_position_limit": (48, 4),
    "min_position_limit": (52, 4),
    "torque_enable": (64, 1),
    "led": (65, 1),
    "hardware_error_status": (70, 1),
    "profile_velocity": (112, 4),
    "goal_position": (116, 4),
    "moving": (122, 1),
    "present_velocity": (128, 4),
    "present_position": (132, 4),
    "present_temperature": (146, 1),
}
TABLE_SIZE = 147  # addresses 0..146
EEPROM_END = 64  # items below this address are writable only with torque off
READ_ONLY = (range(0, 7), range(70, 71), range(122, 147))
SIGNED_ITEMS = ("max_position_limit", "min_position_limit", "goal_position", "present_position",
                "present_velocity")
XM430_W350 = 1020

FAULTS = ("corrupt_crc", "no_reply")


@dataclasses.dataclass
class EmulatedMotor:
    """One motor on the emulated bus."""

    motor_id: int
    model_number: int = XM430_W350
    firmware_version: int = 52
    position: int = 2048  # initial present (and goal) position, ticks
    min_position: int = 0
    max_position: int = 4095
    speed: float = 4096.0  # ticks per second toward the goal while torque is on
    table: bytearray = dataclasses.field(default_factory=lambda: bytearray(TABLE_SIZE))

    def __post_init__(self):
        self.set("model_number", self.model_number)
        self.set("firmware_version", self.firmware_version)
        self.set("id", self.motor_id)
        self.set("baud_rate", 3)  # 1 Mbps
        self.set("operating_mode", 3)  # position control
        self.set("max_position_limit", self.max_position)
        self.set("min_position_limit", self.min_position)
        self.set("goal_position", self.position)
        self.set("present_position", self.position)
        self.set("present_temperature", 30)

    def get(self, item: str) -> int:
        address, size = CONTROL_TABLE[item]
        return int.from_bytes(self.table[address:address + size], "little",
                              signed=item in SIGNED_ITEMS)

    def set(self, item: str, value: int) -> None:
        address, size = CONTROL_TABLE[item]
        self.table[address:address + size] = int(value).to_bytes(
            size, "little", signed=item in SIGNED_ITEMS)

    def advance(self, dt: float) -> None:
        """Moves the present position toward the goal for `dt` seconds (torque on only)."""
        present, goal = self.get("present_position"), self.get("goal_position")
        if not self.get("torque_enable"):
            self.set("moving", 0)
            self.set("present_velocity", 0)
            return
        step = max(1, int(round(self.speed * dt))) if present != goal else 0
        new = present + max(-step, min(step, goal - present))
        self.set("present_position", new)
        self.set("moving", int(new != goal))
        # Present velocity in the X-series unit (0.229 rev/min per count).
        rpm = (new - present) / 4096.0 / max(dt, 1e-6) * 60.0
        self.set("present_velocity", int(round(rpm / 0.229)))

    def write(self, address: int, data: bytes) -> StatusError:
        """A WRITE of `data` at `address`, with the checks a real motor makes."""
        end = address + len(data)
        if not data or end > TABLE_SIZE:
            return StatusError.ACCESS
        if any(address < r.stop and end > r.start for r in READ_ONLY):
            return StatusError.ACCESS
        if address < EEPROM_END and self.get("torque_enable"):
            return StatusError.ACCESS
        new = self.table.copy()
        new[address:end] = data
        low = int.from_bytes(new[52:56], "little", signed=True)
        high = int.from_bytes(new[48:52], "little", signed=True)
        goal_address = CONTROL_TABLE["goal_position"][0]
        if address < goal_address + 4 and end > goal_address:
            goal = int.from_bytes(new[goal_address:goal_address + 4], "little", signed=True)
            if not low <= goal <= high:
                return StatusError.DATA_LIMIT
        torque_address = CONTROL_TABLE["torque_enable"][0]
        if address <= torque_address < end and new[torque_address] not in (0, 1):
            return StatusError.DATA_RANGE
        self.table[:] = new
        return StatusError.NONE

    def read(self, address: int, length: int) -> tuple[StatusError, bytes]:
        if length <= 0 or address + length > TABLE_SIZE:
            return StatusError.ACCESS, b""
        return StatusError.NONE, bytes(self.table[address:address + length])


class DynamixelEmulator:
    """Emulated motors behind a pty; use as a context manager or call :meth:`close`.

    Args:
        motors: the motors on the bus (ids must be distinct), or ids for default XM430 motors.
    """

    def __init__(self, motors: Sequence[EmulatedMotor | int]):
        self.motors: dict[int, EmulatedMotor] = {}
        for motor in motors:
            motor = motor if isinstance(motor, EmulatedMotor) else EmulatedMotor(int(motor))
            if motor.motor_id in self.motors or not 0 <= motor.motor_id < BROADCAST_ID:
                raise ValueError(f"motor ids must be distinct and below {BROADCAST_ID}, got "
                                 f"{motor.motor_id} twice or out of range")
            self.motors[motor.motor_id] = motor
        self._lock = threading.Lock()
        self._fault: str | None = None
        self._fault_ids: frozenset[int] | None = None
        # The latest instruction packets, in order.
        self.received: collections.deque[Packet] = collections.deque(maxlen=EMULATOR_PACKETS_KEPT)
        self._last_time = time.monotonic()
        self._master, self._slave = os.openpty()
        # Raw mode: no echo, no line editing, no CR/LF translation; pyserial sets it again on open.
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)  # replies never wait for the host
        self.dropped_replies = 0
        self.bytes_received = 0
        self.longest_pause_s = 0.0  # the bus thread's longest time away beyond its 50 ms wait (starved)
        self.port = os.ttyname(self._slave)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="dynamixel-emulator", daemon=True)
        self._thread.start()

    # -- test controls --------------------------------------------------------------------------

    def inject_fault(self, fault: str | None, ids: Iterable[int] | None = None) -> None:
        """Starts answering with `fault` ("corrupt_crc" or "no_reply"; None: healthy again).

        `ids` limits the fault to those motors' replies (None: every motor).
        """
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
        with self._lock:
            self._fault = fault
            self._fault_ids = None if ids is None else frozenset(ids)

    def set_present(self, motor_id: int, ticks: int) -> None:
        """Puts a motor's present position at `ticks` (a hand moving an unpowered joint)."""
        with self._lock:
            self.motors[motor_id].set("present_position", ticks)

    def get(self, motor_id: int, item: str) -> int:
        """A control table item, after advancing the motion to now."""
        with self._lock:
            self._advance()
            return self.motors[motor_id].get(item)

    def instructions(self) -> list[int]:
        """The instruction codes received so far, in order."""
        with self._lock:
            return [p.instruction for p in self.received]

    # -- the bus ----------------------------------------------------------------------------------

    def _serve(self) -> None:
        reader = PacketReader()
        last = time.monotonic()
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._master], [], [], 0.05)
                now = time.monotonic()
                self.longest_pause_s = max(self.longest_pause_s, now - last - 0.05)
                last = now
                if not ready:
                    continue
                data = os.read(self._master, 4096)
            except OSError:
                return  # closed
            self.bytes_received += len(data)
            for packet in reader.feed(data):
                with self._lock:
                    reply = self._handle(packet)
                if reply:
                    try:
                        sent = os.write(self._master, reply)
                    except BlockingIOError:  # the host side's buffer is full: the reply is lost, as on a wire
                        sent = 0
                    except OSError:
                        return
                    if sent < len(reply):
                        self.dropped_replies += 1

    def _advance(self) -> None:
        now = time.monotonic()
        dt, self._last_time = now - self._last_time, now
        for motor in self.motors.values():
            motor.advance(dt)

    def _reply(self, motor_id: int, error: int, params: bytes = b"") -> bytes:
        if self._fault is not None and (self._fault_ids is None or motor_id in self._fault_ids):
            if self._fault == "no_reply":
                return b""
            packet = bytearray(encode_status(motor_id, error, params))
            packet[-1] ^= 0xA5  # a CRC that cannot match
            return bytes(packet)
        return encode_status(motor_id, error, params)

    def _handle(self, packet: Packet) -> bytes:
        """The bytes the bus answers `packet` with (empty: no answer)."""
        self.received.append(packet)
        self._advance()
        target, instruction, params = packet.motor_id, packet.instruction, packet.params
        broadcast = target == BROADCAST_ID
        if not broadcast and target not in self.motors:
            return b""  # nobody with that id on the bus
        if not packet.crc_ok:
            return b"" if broadcast else self._reply(target, StatusError.CRC)
        targets = list(self.motors) if broadcast else [target]

        if instruction == Instruction.PING:
            return b"".join(
                self._reply(i, 0, self.motors[i].get("model_number").to_bytes(2, "little")
                            + bytes([self.motors[i].get("firmware_version")]))
                for i in targets)
        if instruction == Instruction.READ:
            if broadcast:
                return b""
            if len(params) != 4:
                return self._reply(target, StatusError.DATA_LENGTH)
            address, length = (int.from_bytes(params[k:k + 2], "little") for k in (0, 2))
            error, data = self.motors[target].read(address, length)
            return self._reply(target, error, data)
        if instruction == Instruction.WRITE:
            if len(params) < 3:
                return b"" if broadcast else self._reply(target, StatusError.DATA_LENGTH)
            address = int.from_bytes(params[:2], "little")
            errors = [self.motors[i].write(address, params[2:]) for i in targets]
            return b"" if broadcast else self._reply(target, errors[0])
        if instruction == Instruction.SYNC_READ:
            if not broadcast or len(params) < 5:
                return b""
            address, length = (int.from_bytes(params[k:k + 2], "little") for k in (0, 2))
            replies = []
            for motor_id in params[4:]:
                if motor_id in self.motors:
                    error, data = self.motors[motor_id].read(address, length)
                    replies.append(self._reply(motor_id, error, data))
            return b"".join(replies)
        if instruction == Instruction.SYNC_WRITE:
            if not broadcast or len(params) < 4:
                return b""
            address, length = (int.from_bytes(params[k:k + 2], "little") for k in (0, 2))
            entries = params[4:]
            if length <= 0 or len(entries) % (length + 1):
                return b""  # malformed: motors ignore it
            for k in range(0, len(entries), length + 1):
                motor = self.motors.get(entries[k])
                if motor is not None:
                    motor.write(address, entries[k + 1:k + 1 + length])
            return b""
        return b"" if broadcast else self._reply(target, StatusError.INSTRUCTION)

    # -- lifetime ---------------------------------------------------------------------------------

    @property
    def slave_fd(self) -> int:
        """The emulator's own descriptor of the pty's slave side (for its line settings)."""
        return self._slave

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> DynamixelEmulator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
