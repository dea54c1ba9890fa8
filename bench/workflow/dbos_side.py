"""The DBOS Transact side of ``bench.workflow``: a 3-step no-op workflow on PostgreSQL, one process.

``python -m bench.workflow.dbos_side <runs> <database url>`` prints ``steps_per_s=<x>``."""

from __future__ import annotations

import sys
import time

from dbos import DBOS, DBOSConfig


def main(runs: int, url: str) -> None:
    config: DBOSConfig = {"name": "wfbench", "system_database_url": url}
    DBOS(config=config)

    @DBOS.step()
    def noop(i: int) -> int:
        return i

    @DBOS.workflow()
    def three(i: int) -> int:
        noop(i)
        noop(i)
        return noop(i)

    DBOS.launch()
    try:
        for i in range(20):  # warm-up
            DBOS.start_workflow(three, i).get_result()
        started = time.perf_counter()
        handles = [DBOS.start_workflow(three, i) for i in range(runs)]
        for handle in handles:
            handle.get_result()
        elapsed = time.perf_counter() - started
    finally:
        DBOS.destroy()
    print(f"steps_per_s={3 * runs / elapsed:.1f}", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
