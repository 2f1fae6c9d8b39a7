"""Everything a benchmark module needs, under one short name (``from . import _helpers as h``).

Each concept lives in a small module of its own; this one only gathers them, so that
the benchmark modules read as "what is measured":

* ``_sizes``: pinned sizes (small ones under ``PRISMQ_BENCH_SMOKE=1``);
* ``_store``: the prismq_queue package or a skip, temp files, PostgreSQL schemas;
* ``_loops``: an event loop per benchmark;
* ``_workload``: seeded payloads and a fast prefill;
* ``_stats``: median, percentile, Jain's index;
* ``_children``: worker and producer processes (benchmarks/_child.py);
* ``_memo``: one measurement shared by the figures that read it;
* ``_base``: the shapes benchmark classes share.

Importing it imports prismq_queue too, when the commit has it (``_store._preimport``:
asv forks every benchmark process from one that imported the suite); a commit without
it imports fine and each benchmark then skips.
"""

from ._children import Child, child_env, now, start_children  # noqa: F401
from ._loops import close_loop, new_loop, run  # noqa: F401
from ._memo import clear as clear_memo  # noqa: F401
from ._memo import record, recorded, repeats, shared  # noqa: F401
from ._sizes import SMOKE, size  # noqa: F401
from ._stats import REPEATS, jain, median, percentile, repeat_median  # noqa: F401
from ._store import (BACKENDS, PG_ENV, SERVER_ENV, Store, TempDir, need, need_backend, pq,  # noqa: F401
                     remove_db)
from ._workload import chunks, fill, noop_items, payloads, produce  # noqa: F401
