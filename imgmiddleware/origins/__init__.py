"""Bundled WSGI apps for the middleware to wrap (the embedded default, and later the OSS bucket)."""
