"""The result cache: processed results in tiers -- memory per worker, disk per machine, Redis for
every node -- with single-flight so that concurrent requests for one result do the work once, and
the validator memo that lets a hit be revalidated without reading the source.

One module per concern, because each fails and is reasoned about on its own: entry.py (what a result
is and its key), memory.py, disk.py and shared.py (the tiers), breaker.py (what keeps a bad Redis
from costing requests), flight.py (single-flight at every scope) and tiers.py (ResultCache, the
order of the tiers). It knows nothing of WSGI.
"""

from .disk import FAILED
from .entry import CACHE_SCHEMA, Entry, Memo, engine_version, result_key
from .flight import LeaderBusy
from .tiers import CacheStats, ResultCache

__all__ = ["CACHE_SCHEMA", "FAILED", "CacheStats", "Entry", "LeaderBusy", "Memo", "ResultCache",
           "engine_version", "result_key"]
