"""A process that writes audit records and then exits (graceful) or waits to be killed (hard): see test_audit.py.

    python -m tests.integration.audit_child <study uid> <count> exit|wait

Settings come from the environment (the test gives Azurite's connection string, a spool folder, and a flush
interval of an hour, so nothing is appended in the background before the process ends).
"""

from __future__ import annotations

import sys
import time

from shared import audit
from shared.audit.record import INSTANCES_TRANSFERRED, READ, SUCCESS, Actor, Subjects
from shared.config import get_settings


def main(study: str, count: int, mode: str) -> int:
    settings = get_settings()
    for n in range(count):
        subjects = Subjects()
        subjects.add(study, f"{study}.1", f"{study}.1.{n}")
        audit.emit(settings, audit.new_record(settings, INSTANCES_TRANSFERRED, READ, outcome=SUCCESS,
                                              requestor=Actor("child-process"), subjects=subjects))
    print("emitted", flush=True)
    if mode == "wait":
        time.sleep(600)
    return 0  # normal exit: atexit appends what waits


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
