"""Calibrate a servo arm by hand and write its calibration file.

    python -m robot_infra.tools.calibrate_arm --arm=so101 --port=/dev/ttyACM0 \\
        --output=$HOME/calibration/so101_follower.json
    python -m robot_infra.tools.calibrate_arm --arm=koch --port=/dev/ttyUSB0 \\
        --output=koch_leader.json --duration_s=30 --invert=wrist_roll

Before starting, hold the arm in the reference posture: every joint in the middle of its range,
the gripper fully closed. The tool switches torque off, takes that first reading as each joint's
zero, then samples while you move every joint through its full range, for ``--duration_s``
seconds or (``--duration_s=0``) until you press Enter. It writes the file atomically and prints
what it found; :func:`robot_infra.calibration.load_calibration` reads it back. See
:mod:`robot_infra.calibration` for the file format.
"""

from __future__ import annotations

import sys
import threading

from absl import app, flags

from robot_infra import calibration as calib
from robot_infra.servo_bus import ServoBusError

FLAGS = flags.FLAGS
flags.DEFINE_enum("arm", None, list(calib.ARMS), "Which arm: its bus and joints (names, ids 1-6).")
flags.DEFINE_string("port", None, "Serial port of the arm's bus adapter, e.g. /dev/ttyACM0.")
flags.DEFINE_string("output", None, "Where to write the calibration JSON file.")
flags.DEFINE_float("duration_s", 0.0, "Seconds to sample; 0: until Enter.")
flags.DEFINE_float("period_s", 0.02, "Seconds between two samples.")
flags.DEFINE_integer("baudrate", 1_000_000, "The servos' baud rate.")
flags.DEFINE_float("timeout_ms", 0.0, "Reply timeout per packet (0: the SDK's default).")
flags.DEFINE_list("invert", [], "Joints whose angle grows the other way (sign -1).")


def _watch_enter(stop: threading.Event) -> None:
    sys.stdin.readline()  # a line, or end of input
    stop.set()


def main(argv: list[str]) -> None:
    del argv
    spec = calib.ARMS[FLAGS.arm]
    signs = {name: -1 for name in FLAGS.invert}
    arm = calib.make_arm(spec.bus, FLAGS.port, calib.uncalibrated_motors(spec.motors),
                         baudrate=FLAGS.baudrate, timeout_ms=FLAGS.timeout_ms or None)
    stop = threading.Event()
    duration = FLAGS.duration_s or None
    if duration is None or sys.stdin.isatty():
        threading.Thread(target=_watch_enter, args=(stop,), daemon=True).start()
    print(f"Calibrating {FLAGS.arm} ({spec.bus} bus on {FLAGS.port}). The arm must be in the "
          f"reference posture now: {calib.REFERENCE_POSTURE}. Torque goes off; then move every "
          "joint through its full range, "
          + (f"for {duration:g} s." if duration else "and press Enter when done."), flush=True)
    printed = [0]

    def show(ticks, low, high):
        printed[0] += 1
        if printed[0] % 25 == 0 and sys.stdout.isatty():
            ranges = "  ".join(f"{n}: {lo}..{hi}" for n, lo, hi in zip(arm.names, low, high,
                                                                         strict=True))
            print("\r" + ranges, end="", flush=True)

    try:
        with arm:
            result = calib.record_calibration(arm, FLAGS.arm, spec.bus, duration_s=duration,
                                              stop=stop, period_s=FLAGS.period_s, signs=signs,
                                              on_sample=show)
    except (calib.CalibrationError, ServoBusError) as error:
        sys.exit(f"\ncalibrate_arm: {error}")  # a clear message, not a traceback; nothing written
    path = calib.write_calibration(FLAGS.output, result)
    print()
    for name, joint in result.joints.items():
        print(f"  {name:14s} id {joint.id}: zero {joint.zero_ticks}, range "
              f"{joint.min_ticks}..{joint.max_ticks}, sign {joint.sign:+d}")
    if result.gripper is not None:
        print(f"  gripper open at {result.gripper.open_ticks}, closed at "
              f"{result.gripper.closed_ticks}")
    print(f"wrote {path}")


if __name__ == "__main__":
    flags.mark_flags_as_required(["arm", "port", "output"])
    app.run(main)
