"""A minimal, real Django project serving tests/fixtures, wrapped by the middleware in wsgi.py."""
