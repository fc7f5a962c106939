"""Long-running processes a test starts (a robot server, an emulated bus) and waits for."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path


def start_service(command: list[str], ready: str, log: Path, env: dict[str, str],
                  started: list[subprocess.Popen] | None = None, timeout: float = 120.0) -> str:
    """Starts `command` with its output in `log` and waits for the first line containing `ready`;
    returns that line. The process is appended to `started` first, so that the caller's cleanup
    stops it even when it never gets ready (it then fails with the log's end)."""
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    if started is not None:
        started.append(process)
    deadline = time.monotonic() + timeout
    while True:
        text = Path(log).read_text(errors="replace")
        line = next((x for x in text.splitlines() if ready in x), None)
        if line is not None:
            return line.strip()
        if process.poll() is not None or time.monotonic() > deadline:
            if started is None:
                process.kill()
            raise AssertionError(f"{' '.join(command)[:200]} did not print {ready!r} "
                                 f"(exit code {process.poll()}): {text[-3000:]}")
        time.sleep(0.1)
