"""How imgmiddleware is served so that slow clients cost a connection, never a thread (issue 15).

gunicorn's threaded worker reads a request's head and body in the thread that will run the app, so a
handful of clients sending a byte every few seconds hold every thread of a node. Here gunicorn's own
event-loop worker reads requests instead, and the WSGI app runs in a thread pool only once a request
has arrived whole:

- ``bridge.BufferedWSGI`` is the ASGI app that worker runs: it reads the body on the event loop
  (into memory, or a temporary file past ``request_body_memory_bytes``) under a deadline that grows
  with the bytes received, then calls the WSGI app in one of ``threads`` threads and streams its
  answer back, each write bounded by ``client_send_timeout``;
- ``worker.EventLoopWorker`` is gunicorn's asgi worker plus the one bound it lacks: a deadline for a
  request's head (``client_header_timeout``).

``imgmiddleware serve`` runs them, and so does ``gunicorn -c deploy/gunicorn.conf.py
imgmiddleware.wsgi:application`` (the worker wraps any WSGI app). Nothing here knows OSS beyond the
errors a late or oversized request earns.
"""
