"""Running the per-case scoring work on a Dask distributed cluster (the ``[distributed]`` extra).

``cardbench score --scheduler tcp://HOST:PORT`` sends the work to a running scheduler (started
with ``dask scheduler`` and ``dask worker`` processes, or by dask-jobqueue on SLURM/PBS);
``--scheduler local:N`` starts a :class:`distributed.LocalCluster` of N single-threaded worker
processes for the run and stops it afterwards. Both give a :class:`concurrent.futures.Executor`
(``distributed.Client.get_executor``) that :func:`cardbench.benchmark.scoring.score` accepts as
``executor=``. Dask retries the tasks of a worker that dies (up to
``distributed.scheduler.allowed-failures`` times, default 3); a case that still fails is one
problem line naming it.

Workers read inputs by path, so the reference, the predictions and the ``--workdir`` (where an
archive is extracted) must be on storage that every worker sees. dask and distributed are
imported inside the functions, so ``cardbench.benchmark`` imports without them.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
from concurrent.futures import Executor
from typing import Iterator

_LOCAL = re.compile(r"^local:(\d+)$")
_REMOTE = re.compile(r"^(tcp|tls|inproc|ucx|ws|wss)://\S+$")


def parse_scheduler(spec: str) -> tuple[str, int | str]:
    """Parse ``local:N`` (N >= 1 worker processes) or a scheduler address ``tcp://HOST:PORT``.

    Returns:
        ``("local", N)`` or ``("address", spec)``.

    Raises:
        ValueError: anything else, with the accepted forms in the message.
    """
    s = str(spec).strip()
    m = _LOCAL.match(s)
    if m and int(m.group(1)) >= 1:
        return "local", int(m.group(1))
    if _REMOTE.match(s):
        return "address", s
    raise ValueError(f"--scheduler {spec!r}: give local:N (N >= 1 worker processes on this machine) or the "
                     "address of a running Dask scheduler, e.g. tcp://10.0.0.5:8786")


@contextlib.contextmanager
def dask_executor(spec: str, timeout_s: float = 30.0) -> Iterator[Executor]:
    """Context manager that yields a ``concurrent.futures.Executor`` backed by Dask distributed.

    Args:
        spec: ``local:N`` (a LocalCluster of N worker processes, one thread each, no dashboard,
            its scratch space in a temporary folder; closed and the folder removed on exit, also
            after an error) or ``tcp://HOST:PORT`` of a running scheduler (left running).
        timeout_s: seconds to wait for the scheduler to answer.

    Raises:
        ValueError: a malformed ``spec``, distributed not installed, or the scheduler does not
            answer within ``timeout_s``.
    """
    kind, val = parse_scheduler(spec)
    try:
        from distributed import Client, LocalCluster
    except ImportError as e:
        raise ValueError("--scheduler needs Dask distributed: pip install 'cardbench[distributed]'") from e
    cluster = None
    scratch = None
    try:
        if kind == "local":
            # the workers' scratch space (dask-scratch-space/, spilled data, locks) in a folder of our own,
            # removed when the run ends, also after an error: nothing is left in $TMPDIR
            import dask

            scratch = tempfile.mkdtemp(prefix="cardbench-dask-")
            with dask.config.set({"temporary-directory": scratch}):  # the scheduler's too
                cluster = LocalCluster(n_workers=int(val), threads_per_worker=1, processes=True,
                                       dashboard_address=None, local_directory=scratch)
            client = Client(cluster, timeout=timeout_s)
        else:
            try:
                client = Client(str(val), timeout=timeout_s)
            except OSError as e:
                raise ValueError(f"--scheduler {val}: no Dask scheduler answered within {timeout_s:.0f} s ({e}); "
                                 "start one with `dask scheduler` and workers with `dask worker ADDRESS`") from e
        try:
            yield client.get_executor(pure=False)
        finally:
            client.close()
    finally:
        try:
            if cluster is not None:
                cluster.close()
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
