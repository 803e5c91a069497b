"""Optuna storage for the search: SQLite in the run folder by default, PostgreSQL for many machines.

A killed run resumes: trials left RUNNING by a dead local process are failed and their parameters
re-enqueued; completed trials stay and are never recomputed. Heartbeats let other workers do the
same for a worker that vanished on another machine.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from dnnzip.errors import ConfigError

STUDY_NAME = "dnnzip-auto"
HEARTBEAT_S = 20


def storage_url(out_dir: str | os.PathLike, url: str | None) -> str:
    if url:
        return url
    return f"sqlite:///{Path(out_dir).resolve() / 'study.db'}"


def open_storage(url: str) -> RDBStorage:
    if not url.startswith(("sqlite:///", "postgresql://", "postgresql+psycopg://",
                           "postgresql+psycopg2://", "mysql://")):
        raise ConfigError(f"storage URL {url!r} is not supported; use sqlite:///PATH or "
                          "postgresql://user@host:port/db")
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {
        "pool_pre_ping": True}
    import warnings
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_S,
                              grace_period=3 * HEARTBEAT_S,
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                                  max_retry=2))
    except Exception as exc:  # sqlalchemy raises many types for an unreachable server
        hint = ("install the postgres extra (pip install 'dnnzip[postgres]')"
                if "psycopg" in str(exc) else "check that the server is up and the URL is right")
        raise ConfigError(f"cannot open search storage {url!r}: {str(exc).splitlines()[0]}; "
                          f"{hint}") from exc


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_dead_local_trials(study: optuna.Study) -> int:
    """Fail RUNNING trials whose worker process on this host is gone; re-enqueue their params.

    Returns how many were recovered. Trials of live workers, or of other hosts, are left to the
    heartbeat mechanism.
    """
    host = socket.gethostname()
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.user_attrs.get("worker", "")
        h, _, pid = owner.rpartition(":")
        if h == host and pid.isdigit() and not _pid_alive(int(pid)):
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
            n += 1
    return n
