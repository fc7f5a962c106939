"""A serial-port emulator of Feetech STS3215 servos, for tests without hardware.

:class:`FeetechEmulator` opens a pseudo-terminal pair (``os.openpty``). The driver, through
feetech-servo-sdk's ``PortHandler`` and pyserial, opens the slave side (:attr:`port`, a
``/dev/pts/N`` path) as it would open ``/dev/ttyACM0``; a thread here reads the master side,
parses instruction packets with :mod:`robot_infra.feetech.protocol` (never with the SDK, so a
driver test checks the SDK against an independent implementation) and answers like a bus of
STS3215 servos:

- PING: an empty status packet (the SDK then reads the model number, item 3).
- READ / WRITE over each servo's memory table (:data:`~robot_infra.feetech.protocol.CONTROL_TABLE`,
  little-endian, positions in sign-magnitude). A write to a read-only item, past the table's
  end, or to EEPROM (below address 40) while the lock (item 55) is 1 is refused with the
  :data:`~robot_infra.feetech.protocol.ERROR_ACCESS` flag and changes nothing; a goal position
  outside the servo's min / max angle limits (items 9 / 11) gets the angle flag and is not
  stored. (A real STS3215 is less strict: it has no access flag, a write to locked EEPROM lands
  in RAM and is lost at power-off, and a goal past a limit is clamped. The emulator refuses
  loudly so a test sees that such a write did not do what was meant.)
- SYNC_READ (one status packet per listed servo, in the listed order) and SYNC_WRITE (no reply).
- A packet with a wrong checksum gets no reply, as a real STS3215 discards it: the driver
  times out.

Servos start as after power-on: torque off, EEPROM locked. While torque is on the present
position moves toward the goal at :attr:`EmulatedServo.speed` ticks per second; with torque off
it stays where :meth:`FeetechEmulator.set_present` puts it (a person moving the arm by hand).

Faults for tests (:meth:`FeetechEmulator.inject_fault`): ``"corrupt_checksum"`` breaks the
checksum of every reply, ``"no_reply"`` stays silent; either for all servos or some. A standing
servo fault (overload, overheat ...) is :attr:`EmulatedServo.status_flags`, set in every reply.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import select
import threading
import time
import tty
from collections.abc import Iterable, Sequence

from robot_infra.feetech import protocol
from robot_infra.feetech.protocol import ErrorFlag, Instruction
from robot_infra.servo_bus import EMULATOR_PACKETS_KEPT

FAULTS = ("corrupt_checksum", "no_reply")
_GOAL = protocol.CONTROL_TABLE["goal_position"]


def _overlaps(start: int, stop: int, span: range) -> bool:
    return start < span.stop and stop > span.start


@dataclasses.dataclass
class EmulatedServo:
    """One STS3215 on the emulated bus."""

    motor_id: int
    position: int = 2048  # initial present (and goal) position, ticks
    min_position: int = 0  # the servo's angle limits (items 9 and 11)
    max_position: int = 4095
    speed: float = 4096.0  # ticks per second toward the goal while torque is on
    status_flags: int = 0  # error flags in every reply (e.g. ErrorFlag.OVERLOAD), a standing fault
    model_number: int = protocol.STS3215_MODEL
    table: bytearray = dataclasses.field(default_factory=lambda: bytearray(protocol.TABLE_SIZE))

    def __post_init__(self):
        for item, value in (("firmware_major_version", 3), ("firmware_minor_version", 10),
                            ("model_number", self.model_number), ("id", self.motor_id),
                            ("min_position_limit", self.min_position),
                            ("max_position_limit", self.max_position),
                            ("goal_position", self.position), ("present_position", self.position),
                            ("present_voltage", 74), ("present_temperature", 30), ("lock", 1)):
            self.set(item, value)

    def get(self, item: str) -> int:
        start, size = protocol.CONTROL_TABLE[item]
        raw = int.from_bytes(self.table[start:start + size], "little")
        return protocol.from_sign_magnitude(raw, protocol.SIGN_BITS[item]) \
            if item in protocol.SIGN_BITS else raw

    def set(self, item: str, value: int) -> None:
        start, size = protocol.CONTROL_TABLE[item]
        if item in protocol.SIGN_BITS:
            value = protocol.to_sign_magnitude(value, protocol.SIGN_BITS[item])
        self.table[start:start + size] = int(value).to_bytes(size, "little")

    def advance(self, dt: float) -> None:
        """Moves the present position toward the goal for `dt` seconds (torque on only)."""
        here, goal = self.get("present_position"), self.get("goal_position")
        if self.get("torque_enable") and here != goal:
            limit = max(1, round(self.speed * dt))
            here += max(-limit, min(limit, goal - here))
            self.set("present_position", here)
        self.set("moving", int(bool(self.get("torque_enable")) and here != goal))

    def write(self, start: int, data: bytes) -> int:
        """A WRITE of `data` at address `start`; returns the reply's error flags."""
        stop = start + len(data)
        if (not data or stop > protocol.TABLE_SIZE
                or any(_overlaps(start, stop, span) for span in protocol.READ_ONLY)):
            return ErrorFlag.ACCESS
        if start < protocol.EEPROM_END and self.get("lock"):
            return ErrorFlag.ACCESS
        if _overlaps(start, stop, range(_GOAL[0], _GOAL[0] + _GOAL[1])):
            candidate = self.table.copy()
            candidate[start:stop] = data
            raw = int.from_bytes(candidate[_GOAL[0]:_GOAL[0] + _GOAL[1]], "little")
            goal = protocol.from_sign_magnitude(raw)
            if not self.get("min_position_limit") <= goal <= self.get("max_position_limit"):
                return ErrorFlag.ANGLE
        self.table[start:stop] = data
        return 0

    def read(self, start: int, length: int) -> tuple[int, bytes]:
        if length <= 0 or start + length > protocol.TABLE_SIZE:
            return ErrorFlag.ACCESS, b""
        return 0, bytes(self.table[start:start + length])


class FeetechEmulator:
    """Emulated STS3215 servos behind a pty; use as a context manager or call :meth:`close`.

    Args:
        servos: the servos on the bus (ids must be distinct), or ids for default ones.
    """

    def __init__(self, servos: Sequence[EmulatedServo | int]):
        self.servos: dict[int, EmulatedServo] = {}
        for servo in servos:
            if not isinstance(servo, EmulatedServo):
                servo = EmulatedServo(int(servo))
            if servo.motor_id in self.servos or not 0 <= servo.motor_id <= protocol.MAX_ID:
                raise ValueError(f"servo ids must be distinct and in 0..{protocol.MAX_ID}, got "
                                 f"{servo.motor_id}")
            self.servos[servo.motor_id] = servo
        # The latest instruction packets, in order.
        self.received: collections.deque[protocol.Packet] = collections.deque(maxlen=EMULATOR_PACKETS_KEPT)
        self._lock = threading.Lock()
        self._fault: tuple[str, frozenset[int] | None] | None = None
        self._clock = time.monotonic()
        self._master, slave = os.openpty()
        tty.setraw(slave)  # no echo or line discipline; pyserial sets raw mode again on open
        os.set_blocking(self._master, False)  # replies never wait for the host (see _send)
        self.dropped_replies = 0
        self.bytes_received = 0
        self.longest_pause_s = 0.0  # the bus thread's longest time away beyond its 50 ms wait (starved)
        self._slave = slave
        self.port = os.ttyname(slave)
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feetech-emulator", daemon=True)
        self._thread.start()

    # -- test controls --------------------------------------------------------------------------

    def inject_fault(self, fault: str | None, ids: Iterable[int] | None = None) -> None:
        """Answers with `fault` from now on ("corrupt_checksum" or "no_reply"; None: healthy).

        `ids` limits the fault to those servos' replies (None: every servo).
        """
        if fault not in (None, *FAULTS):
            raise ValueError(f"unknown fault {fault!r}; the emulator knows {FAULTS} (or None)")
        scope = None if ids is None else frozenset(ids)
        with self._lock:
            self._fault = None if fault is None else (fault, scope)

    def set_present(self, motor_id: int, ticks: int) -> None:
        """Puts a servo's present position at `ticks` (a hand turning an unpowered joint)."""
        with self._lock:
            self.servos[motor_id].set("present_position", ticks)

    def get(self, motor_id: int, item: str) -> int:
        """A memory table item, after advancing the motion to now."""
        with self._lock:
            self._step_motion()
            return self.servos[motor_id].get(item)

    def instructions(self) -> list[int]:
        """The instruction codes received so far, in order."""
        with self._lock:
            return [packet.instruction for packet in self.received]

    # -- the bus ----------------------------------------------------------------------------------

    def _run(self) -> None:
        reader = protocol.PacketReader()
        last = time.monotonic()
        while not self._closing.is_set():
            try:
                ready = select.select([self._master], [], [], 0.05)[0]
                now = time.monotonic()
                self.longest_pause_s = max(self.longest_pause_s, now - last - 0.05)
                last = now
                if not ready:
                    continue
                chunk = os.read(self._master, 1024)
                self.bytes_received += len(chunk)
                for packet in reader.feed(chunk):
                    with self._lock:
                        answer = self._answer(packet)
                    if answer:
                        self._send(answer)
            except OSError:
                return  # the pty was closed

    def _send(self, data: bytes) -> None:
        """Puts a reply on the line without waiting: a servo transmits whether or not the host
        reads, so when the host side's buffer is full the reply (or its rest) is lost, counted in
        :attr:`dropped_replies`, instead of the bus stopping until the host reads."""
        try:
            sent = os.write(self._master, data)
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            self.dropped_replies += 1

    def _step_motion(self) -> None:
        now = time.monotonic()
        for servo in self.servos.values():
            servo.advance(now - self._clock)
        self._clock = now

    def _status(self, motor_id: int, error: int, params: bytes = b"") -> bytes:
        packet = protocol.encode_status(motor_id, error | self.servos[motor_id].status_flags, params)
        if self._fault is None:
            return packet
        fault, ids = self._fault
        if ids is not None and motor_id not in ids:
            return packet
        if fault == "no_reply":
            return b""
        return packet[:-1] + bytes([packet[-1] ^ 0x5A])  # a checksum that cannot match

    def _answer(self, packet: protocol.Packet) -> bytes:
        """The bytes the bus answers `packet` with (empty: silence)."""
        self.received.append(packet)
        self._step_motion()
        if not packet.checksum_ok:
            return b""  # an STS discards a packet with a bad checksum
        target, params = packet.motor_id, packet.params
        if target == protocol.BROADCAST_ID:
            return self._answer_broadcast(packet.instruction, params)
        servo = self.servos.get(target)
        if servo is None:
            return b""  # nobody with that id on the bus
        if packet.instruction == Instruction.PING:
            return self._status(target, 0)
        if packet.instruction == Instruction.READ and len(params) == 2:
            error, data = servo.read(params[0], params[1])
            return self._status(target, error, data)
        if packet.instruction == Instruction.WRITE and len(params) >= 2:
            return self._status(target, servo.write(params[0], params[1:]))
        return b""  # an instruction an STS3215 does not take, or malformed

    def _answer_broadcast(self, instruction: int, params: bytes) -> bytes:
        if instruction == Instruction.PING:
            return b"".join(self._status(i, 0) for i in self.servos)
        if instruction == Instruction.SYNC_READ and len(params) >= 3:
            start, length = params[0], params[1]
            replies = [self._status(i, *self.servos[i].read(start, length))
                       for i in params[2:] if i in self.servos]
            return b"".join(replies)
        if instruction == Instruction.SYNC_WRITE and len(params) >= 2:
            start, length = params[0], params[1]
            entries = params[2:]
            if length and len(entries) % (length + 1) == 0:  # a malformed one is ignored whole
                for k in range(0, len(entries), length + 1):
                    if entries[k] in self.servos:
                        self.servos[entries[k]].write(start, entries[k + 1:k + 1 + length])
        return b""

    # -- lifetime ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Stops answering and closes the pty (a driver still on it sees the link drop)."""
        self._closing.set()
        self._thread.join(timeout=2.0)
        with contextlib.suppress(OSError):
            os.close(self._master)
        with contextlib.suppress(OSError):
            os.close(self._slave)

    @property
    def slave_fd(self) -> int:
        """The emulator's own descriptor of the pty's slave side (for its line settings)."""
        return self._slave

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def __enter__(self) -> FeetechEmulator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
