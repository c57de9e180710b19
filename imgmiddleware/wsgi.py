"""A WSGI entry point for servers started from the command line:

    gunicorn -c deploy/gunicorn.conf.py imgmiddleware.wsgi:application

It serves the folder named by IMGMW_ROOT (default: the bundled samples) through the middleware, with
the config file named by IMGMW_CONFIG (default: conf/imgmiddleware.toml when present).
"""

from __future__ import annotations

import os

from .cli import SAMPLES, build_app, load_config

application = build_app(os.environ.get("IMGMW_ROOT", os.fspath(SAMPLES)),
                        load_config(os.environ.get("IMGMW_CONFIG")))
