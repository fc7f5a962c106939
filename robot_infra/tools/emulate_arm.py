"""Runs an emulated servo bus of an arm in its own process, until SIGTERM or Ctrl-C.

    python -m robot_infra.tools.emulate_arm --arm so101
    # prints: emulated so101 bus (feetech) on /dev/pts/5

The bus is :class:`robot_infra.feetech.emulator.FeetechEmulator` (SO-100 / SO-101) or
:class:`robot_infra.dynamixel.emulator.DynamixelEmulator` (Koch) behind a pseudo-terminal: point
the robot server (``--serial_port``) or the calibration tool at the printed path as at
``/dev/ttyACM0``. It stands in for the hardware in tests and lets a user try the follower's
server without an arm. Being a process of its own, its replies do not wait on another program's
threads or garbage collections, as a real bus's do not.
"""

from __future__ import annotations

import faulthandler
import signal
import sys
import termios
import threading

from absl import app, flags

from robot_infra.calibration import ARMS
from robot_infra.servo_bus import describe_line_change

FLAGS = flags.FLAGS
flags.DEFINE_enum("arm", "so101", sorted(ARMS), "The arm whose servos (ids, bus protocol) are emulated.")


def make_emulator(arm: str):
    spec = ARMS[arm]
    if spec.bus == "feetech":
        from robot_infra.feetech.emulator import FeetechEmulator

        return FeetechEmulator(list(spec.motors.values()))
    from robot_infra.dynamixel.emulator import DynamixelEmulator

    return DynamixelEmulator(list(spec.motors.values()))


def report(emulator, raw: list) -> str:
    """What the bus has seen, and whether the pty is still in raw mode."""
    try:
        line = describe_line_change(raw, termios.tcgetattr(emulator.slave_fd)) or "no raw-mode flag"
    except termios.error as error:
        line = f"unreadable ({error})"
    return (f"{emulator.bytes_received} bytes and {len(emulator.received)} instruction packets "
            f"received, {emulator.dropped_replies} replies dropped (the host did not read), the bus "
            f"thread's longest pause {1000 * emulator.longest_pause_s:.0f} ms; line settings changed "
            f"since start: {line}")


def main(argv: list[str]) -> None:
    del argv
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    with make_emulator(FLAGS.arm) as emulator:
        raw = termios.tcgetattr(emulator.slave_fd)

        def dump(*_):  # kill -USR1: every thread's stack and the bus's counts, to stderr
            faulthandler.dump_traceback(all_threads=True)
            print(report(emulator, raw), file=sys.stderr, flush=True)

        signal.signal(signal.SIGUSR1, dump)
        # One line a supervisor (or a test) can wait for.
        print(f"emulated {FLAGS.arm} bus ({ARMS[FLAGS.arm].bus}) on {emulator.port}", flush=True)
        while not stopping.wait(0.5):
            if not emulator.running:
                raise SystemExit("the emulator's thread stopped")
        print(f"emulated bus closed: {report(emulator, raw)}", flush=True)


if __name__ == "__main__":
    app.run(main)
