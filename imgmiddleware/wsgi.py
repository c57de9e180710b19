"""A WSGI entry point for servers started from the command line:

    gunicorn -c deploy/gunicorn.conf.py imgmiddleware.wsgi:application

It serves the bundled bucket app on the data root IMGMW_ROOT (default: ./oss-data, seeded with an
example bucket), or a plain folder named by IMGMW_STATIC, through the middleware, with the config file
named by IMGMW_CONFIG (default: ./conf/imgmiddleware.toml when present, else the packaged default,
as for `imgmiddleware serve`).
"""

from __future__ import annotations

import os

from .cli import DEFAULT_ROOT, build_app, load_config, seed_example_bucket, tune_worker_malloc

_static = os.environ.get("IMGMW_STATIC")
_root = _static or os.environ.get("IMGMW_ROOT", DEFAULT_ROOT)
_config = load_config(os.environ.get("IMGMW_CONFIG"))
# gunicorn imports this module in each worker before the worker starts its threads.
tune_worker_malloc(_config)
if not _static:
    seed_example_bucket(_root)
application = build_app(_root, _config, static=bool(_static))
