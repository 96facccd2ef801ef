"""The executor: settings from the environment and configure(), ordered read-ahead, kernel threads."""

from __future__ import annotations

import threading
import time

import dask
import pytest

from scopeline import executor
from scopeline.errors import ConfigurationError


def test_settings_come_from_the_environment_and_configure(monkeypatch):
    monkeypatch.setattr(executor, "_override", {})
    monkeypatch.setenv("SCOPELINE_WORKERS", "3")
    monkeypatch.setenv("SCOPELINE_DASK_SCHEDULER", "processes")
    monkeypatch.setenv("SCOPELINE_MEMORY_LIMIT", "2GiB")
    assert executor.settings() == executor.Settings("processes", 3, "2GiB")
    assert executor.configure(workers=1, scheduler=None).workers == 1
    assert executor.settings().scheduler == "processes"
    monkeypatch.setenv("SCOPELINE_WORKERS", "many")
    with pytest.raises(ConfigurationError, match="SCOPELINE_WORKERS='many'"):
        executor._from_env()
    with pytest.raises(ConfigurationError, match="at least 1"):
        executor.configure(workers=0)


def test_read_ahead_keeps_order_and_reads_on_other_threads():
    names = []

    def read(i):
        names.append(threading.current_thread().name)
        time.sleep(0.01 * (5 - i % 5))  # later items finish first
        return i * i

    assert list(executor.read_ahead(read, range(12), workers=3)) == [(i, i * i) for i in range(12)]
    assert all(n.startswith("scopeline-read") for n in names)
    names.clear()
    assert list(executor.read_ahead(read, range(4), workers=1)) == [(i, i * i) for i in range(4)]
    assert names == [threading.current_thread().name] * 4


def test_kernel_threads_set_and_restore_the_worker_count():
    import numba

    before = numba.get_num_threads()
    with executor.kernel_threads(1) as n:
        assert n == 1 and executor.current_workers() == 1 and numba.get_num_threads() == 1
        with executor.kernel_threads(64) as m:  # at most what numba may use
            assert m == numba.config.NUMBA_NUM_THREADS == executor.current_workers()
        assert executor.current_workers() == 1
    assert numba.get_num_threads() == before and executor.current_workers() == 1


def test_an_unreachable_scheduler_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="cannot reach the scheduler"), \
            dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        with executor.client(scheduler="tcp://127.0.0.1:9"):
            pass
