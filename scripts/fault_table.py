"""Run the fault-injection tests and print their results as one table (for the issue note).

    PYTHONPATH=. python scripts/fault_table.py [extra pytest args]

Each test prints ``FAULTROW`` lines (tests/e2e/faults.py:report) from what it measured on the
real broker and PostgreSQL; this script only collects and formats them. "time to recover" is
measured from the end of the fault (database started, broker restarted, last kill) to every
post stored; for poison inputs, from the last publish to the whole stream consumed.
"""

from __future__ import annotations

import subprocess
import sys

TESTS = ["tests/e2e/test_faults.py", "tests/e2e/test_faults_process.py"]
HEADER = ("fault or input", "posts sent", "stored", "duplicated", "on the DLQ", "time to recover (s)")


def main() -> int:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", *TESTS, *sys.argv[1:]],
        capture_output=True, text=True,
    )
    rows = [line.split("\t")[1:] for line in done.stdout.splitlines() if line.startswith("FAULTROW\t")]
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-2000:])
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
