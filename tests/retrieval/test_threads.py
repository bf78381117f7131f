"""set_threads: torch, numba and faiss really run on the count it is given, read back from each."""

import logging
import os
import threading

import faiss
import numba
import pytest
import torch

from cascade.retrieval import threads as threads_mod
from cascade.retrieval.errors import InvalidInput
from cascade.retrieval.threads import default_threads, resolve_threads, set_threads, use_in_this_thread


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads(), numba.get_num_threads(), faiss.omp_get_max_threads()
    # size torch's inter-op pool now (torch allows it once per process) so set_threads cannot shrink
    # it for the rest of the test session; set_threads must then leave it as it is
    try:
        torch.set_num_interop_threads(torch.get_num_interop_threads())
    except RuntimeError:
        pass
    yield torch.get_num_interop_threads()
    torch.set_num_threads(before[0])
    numba.set_num_threads(before[1])
    faiss.omp_set_num_threads(before[2])
    threads_mod._per_thread.clear()


def test_default_is_the_cores_this_process_may_use():
    assert default_threads() == len(os.sched_getaffinity(0))
    assert resolve_threads(None) == default_threads()


def test_sets_and_reads_back_every_library(restore_threads):
    got = set_threads(1)
    assert got == {"torch": 1, "torch_interop": restore_threads, "numba": 1, "faiss": 1}
    assert (torch.get_num_threads(), numba.get_num_threads(), faiss.omp_get_max_threads()) == (1, 1, 1)
    # numba's and faiss's counts are per thread: a new thread starts at their defaults until it
    # takes ours (the server's worker threads do, in api.concurrency)
    seen = {}

    def worker():
        seen["before"] = numba.get_num_threads(), faiss.omp_get_max_threads()
        use_in_this_thread()
        seen["after"] = numba.get_num_threads()
        seen["torch"], seen["faiss"] = torch.get_num_threads(), faiss.omp_get_max_threads()

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen["after"] == 1 and seen["torch"] == 1 and seen["faiss"] == 1
    assert seen["before"][0] == numba.config.NUMBA_NUM_THREADS
    got = set_threads("2")
    assert (got["torch"], got["numba"], got["faiss"]) == (2, min(2, numba.config.NUMBA_NUM_THREADS), 2)


def test_numba_is_capped_at_its_start_count(restore_threads, caplog):
    most = numba.config.NUMBA_NUM_THREADS
    with caplog.at_level(logging.WARNING, logger="cascade.retrieval.threads"):
        got = set_threads(most + 1)
    assert got["numba"] == most and numba.get_num_threads() == most
    assert got["torch"] == most + 1 and got["faiss"] == most + 1
    assert any("NUMBA_NUM_THREADS" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("bad", [0, -1, "0", "-2", "1.5", 1.5, "four", "", True])
def test_bad_counts_are_invalid_input(bad):
    with pytest.raises(InvalidInput, match="threads must be a whole number of at least 1"):
        set_threads(bad)


def test_the_servers_worker_threads_take_the_count(restore_threads):
    """api.concurrency runs searches and model calls in worker threads, where numba and faiss
    would otherwise start at their defaults."""
    anyio = pytest.importorskip("anyio")
    from cascade.api.concurrency import Gate

    set_threads(1)

    def counts():
        assert threading.current_thread() is not threading.main_thread()
        return torch.get_num_threads(), numba.get_num_threads(), faiss.omp_get_max_threads()

    assert anyio.run(Gate(2, 0, 30).run, counts) == (1, 1, 1)


def test_a_library_loaded_later_starts_on_the_count():
    """Before torch, numba and faiss are imported, set_threads leaves them the environment they
    read as they load, instead of importing them (torch alone takes seconds)."""
    code = (
        "import sys; from cascade.retrieval.threads import set_threads; got = set_threads(1); "
        "assert not {'torch', 'numba', 'faiss'} & set(sys.modules), sys.modules.keys(); "
        "import torch, numba, faiss; "
        "print(torch.get_num_threads(), numba.get_num_threads(), faiss.omp_get_max_threads())"
    )
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["1", "1", "1"]
