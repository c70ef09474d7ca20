"""Independent trainings in parallel: processes on one machine (joblib), or a
Dask cluster (joblib's ``dask`` backend on a ``dask.distributed`` scheduler).

    for job, result in run_jobs(train_job, jobs, n_jobs=2):            # 2 local processes
        ...
    for job, result in run_jobs(train_job, jobs, scheduler="tcp://host:8786"):
        ...

Results come back as they finish (any order), paired with their job. A job
must fix everything random itself (pysbnn's trainings take one seed from
their config), so serial, local and Dask runs give the same numbers: each job
runs single-threaded (BLAS and Numba), which also keeps float reductions in
one order. joblib and dask[distributed] are optional (``pip install
pysbnn[sweep]``); serial runs need neither.

Set the thread variables of :data:`THREAD_VARS` to 1 *before* numpy is
imported in the driving process (:func:`single_thread_environ`); workers get
them through their environment (loky's ``inner_max_num_threads``, Dask's
nanny), and :func:`limit_threads` enforces them again inside every job.
"""

import os

__all__ = ["THREAD_VARS", "single_thread_environ", "limit_threads", "run_jobs"]

#: Environment variables that size the thread pools of BLAS, OpenMP and Numba.
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "NUMBA_NUM_THREADS")


def single_thread_environ(environ=None):
    """Set every variable of :data:`THREAD_VARS` to ``"1"`` in ``environ`` (default ``os.environ``).

    Call it before numpy is first imported: BLAS reads them once, at load.
    Returns ``environ``.
    """
    environ = os.environ if environ is None else environ
    for var in THREAD_VARS:
        environ[var] = "1"
    return environ


def limit_threads():
    """Inside a running process: BLAS/OpenMP pools to 1 thread (threadpoolctl), Numba to 1.

    Returns the threadpoolctl limiter (keep it alive; it restores on
    ``.restore_original_limits()``).
    """
    from threadpoolctl import threadpool_limits
    limiter = threadpool_limits(1)
    try:
        import numba
    except ImportError:
        pass
    else:
        numba.set_num_threads(1)
    return limiter


def _run_one(fn, job):
    limiter = limit_threads()   # noqa: F841  (held for the duration of the job)
    return job, fn(job)


def run_jobs(fn, jobs, n_jobs=1, scheduler=None):
    """Run ``fn(job)`` for every job; yield ``(job, result)`` as each finishes.

    Parameters
    ----------
    fn : picklable function of one job (a module-level function)
    jobs : list of picklable jobs
    n_jobs : worker processes on this machine (1: in this process, in order)
    scheduler : address of a ``dask.distributed`` scheduler (e.g.
        ``"tcp://10.0.0.5:8786"``) or a ``distributed.Client``; then the jobs run
        on its workers and ``n_jobs`` is ignored. The workers must import the
        same pysbnn and see the data (and, to share the model cache, the
        models directory).
    """
    jobs = list(jobs)
    if scheduler is None and n_jobs == 1:
        for job in jobs:
            yield _run_one(fn, job)
        return
    import joblib
    calls = (joblib.delayed(_run_one)(fn, job) for job in jobs)
    if scheduler is None:
        with joblib.parallel_config(backend="loky", inner_max_num_threads=1):
            yield from joblib.Parallel(n_jobs=n_jobs, return_as="generator_unordered")(calls)
        return
    from distributed import Client
    client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
    try:
        with joblib.parallel_config(backend="dask", wait_for_workers_timeout=60):
            yield from joblib.Parallel(n_jobs=-1, return_as="generator_unordered")(calls)
    finally:
        if client is not scheduler:
            client.close()
