"""The daemon's main thread sees its stop signal whichever thread the kernel gave it to."""

from __future__ import annotations

import subprocess
import sys

# Signals sent to another thread (pthread_kill picks the thread; kill(2) may pick any that
# does not block it): a main thread asleep in threading.Event.wait() never woke for them.
# SIGUSR1 first, which is not a stop signal and must not end the wait.
SIGNAL_ANOTHER_THREAD = """
import signal, threading
from vmcri.stop_signal import StopSignals
signal.signal(signal.SIGUSR1, lambda signum, frame: None)
stop = StopSignals((signal.SIGTERM, signal.SIGINT))
def other() -> None:
    signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)
    signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
threading.Thread(target=other).start()
print(stop.wait().name)
"""


def test_a_stop_signal_taken_by_another_thread_ends_the_wait_and_others_do_not() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SIGNAL_ANOTHER_THREAD],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert result.stdout.split() == ["SIGTERM"]  # not SIGUSR1, whose byte came first
