"""One BLAS thread in every bcirig process, set where the process starts and by every stage that computes.

Why: results must not depend on the machine. OpenBLAS splits a product across its worker threads
differently for different thread counts, and on some processors that changes the last bits of a
matrix-vector product or an eigenvalue; a simulated brain wired or stepped with two threads then
differs from the same brain with one. Small products are also faster on one thread (OpenBLAS's
spinning workers turned a 0.1 ms registration product into 12 ms on a busy 2-core machine).

:func:`pin_blas_threads` is called by the ``bcirig`` command, by every node process and simulation
worker as it starts, and by the constructors of the stages that use BLAS (the pipeline, the simulated
mouse), so that a stage built in a notebook computes exactly what it computes on the rig, whatever ran
before it in the process. It sets the limit again on every call (about a millisecond), so code that
raised the thread count in between cannot leave a stage running with more.
"""

from __future__ import annotations

from threadpoolctl import threadpool_limits


def pin_blas_threads() -> None:
    """Limit BLAS and OpenMP pools to one thread, for the whole process."""
    threadpool_limits(1, user_api="blas")
    threadpool_limits(1, user_api="openmp")
