"""What the Faust apps that tests run as scripts (``python tests/...app.py worker``) share:
the script's entry point, and how a test stops such a worker."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from typing import Any


def _exit_with_parent(parent: int) -> None:
    """Exit when the test process that started this worker is gone (e.g. killed)."""
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)


def main(app: Any) -> None:
    """Run ``app``'s Faust command line, exiting with the test process that started it."""
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    app.main()


def stop(worker: subprocess.Popen[bytes]) -> None:
    """SIGTERM the worker, SIGKILL it if it has not stopped within 30 s."""
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
