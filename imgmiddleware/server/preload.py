"""What gunicorn's master loads before it forks the workers, so that they share it.

Each worker needs OpenCV, NumPy, Pillow (with its format plugins and pillow-heif) and the engine's
modules. Imported in every worker after the fork, their module data (tens of MB of Python objects
and the libraries' relocated data) is private to each worker; imported once in the master, the
pages are shared copy-on-write by all of them. ``gc.freeze()`` then moves those objects out of the
collector's reach: a collection in a worker would otherwise write to every object header it visits
and so copy the pages back. Only modules without side effects at import are loaded here: caches,
connection pools, the metrics registry and the app itself are still built in each worker
(cli.serve's ``load``), since none of them may be shared through a fork. The master never runs
OpenCV, so no OpenCV thread exists at the fork (each worker sizes its own pool in ``post_fork``).

Measured (docs/BENCHMARKS.md, "Memory"): the idle tree of two workers goes from 120 to 93 MB of PSS.
"""

from __future__ import annotations

import gc


def share_before_fork() -> None:
    """Import the workers' heavy modules in the master and freeze the collector's view of them.
    Call it in the master, before the first fork; calling it again (before each fork) is cheap."""
    import cv2  # noqa: F401
    import numpy  # noqa: F401
    from PIL import Image

    from ..imaging import fonts  # noqa: F401
    from ..process import engine  # noqa: F401

    Image.init()          # every format plugin Pillow would otherwise load in each worker
    gc.collect()
    gc.freeze()
