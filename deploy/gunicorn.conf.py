# gunicorn settings for imgmiddleware:
#   gunicorn -c deploy/gunicorn.conf.py imgmiddleware.wsgi:application
# Every value can be overridden on the command line or through GUNICORN_CMD_ARGS.
import multiprocessing
import os

# Where to listen. Behind nginx keep it on loopback (or a unix socket).
bind = os.environ.get("IMGMW_BIND", "127.0.0.1:8080")

# Image work is CPU-bound: one process per core. Each process runs a few threads (gthread) because
# OpenCV releases the GIL while it decodes, resizes and encodes, so threads overlap I/O and pixels.
workers = int(os.environ.get("IMGMW_WORKERS", multiprocessing.cpu_count()))
worker_class = "gthread"
threads = int(os.environ.get("IMGMW_THREADS", 4))

# A 20 MB source at the pixel limit takes well under this; anything slower is a stuck worker.
timeout = 60
graceful_timeout = 30
keepalive = 5

# Recycle workers now and then so heap fragmentation from large images cannot grow without bound.
max_requests = 2000
max_requests_jitter = 200
