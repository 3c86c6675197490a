"""A run key is trained by one command only: the claim.

Under the store's lock a trial looks for a FINISHED run of its key (done), or a RUNNING one
whose claimant lives (someone else is on it); otherwise it creates its RUNNING run, tagged with
the claimant (host, pid, process start), and trains into it. A RUNNING claim of a process that
is gone (same host) is stale: it is ended KILLED and taken over. A claim from another host
cannot be checked and counts as live. An MLflow server has no shared lock: there the
check-then-create is only as atomic as two nearby requests (see docs/protocol.md, Run
identity).
"""

from __future__ import annotations

import time
from typing import Any

from benchsuite.core.record import TAG, Tags
from benchsuite.store.owners import alive, claimant
from benchsuite.store.sqlite import locked
from benchsuite.store.tracking import TrackedRun, Tracker


def claim(
    tracker: Tracker,
    key: str,
    kind: str,
    name: str,
    params: dict[str, Any],
    tags: dict[str, str],
) -> TrackedRun | str:
    """The RUNNING run of ``key`` this process now owns, or why it must not train it.

    ``tags`` carry the claimant (``claimant()``); without them this process is the claimant.
    """
    tags = {**claimant(), **tags}
    with locked(tracker.uri):
        for r in tracker.runs_of(key, kind):
            if r.finished:
                return "already finished"
            if r.status == "RUNNING" and alive(r.tags, TAG):
                return (
                    f"being run by another command (host {r.tag(Tags.CLAIM_HOST)}, "
                    f"pid {r.tag(Tags.CLAIM_PID)})"
                )
            if r.status == "RUNNING":
                TrackedRun(tracker.client, r.run_id).end(
                    "KILLED", "left RUNNING by a command that is gone; taken over"
                )
        return tracker.start_run(name, params, {**tags, Tags.CLAIMED_AT: str(int(time.time()))})
