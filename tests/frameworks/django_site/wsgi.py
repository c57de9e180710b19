"""WSGI entry point of the minimal Django project, wrapped exactly as the README shows.

    gunicorn tests.frameworks.django_site.wsgi:application     (from the repository root)
"""

import os

from django.core.wsgi import get_wsgi_application

from imgmiddleware import ImageMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.frameworks.django_site.settings")

application = ImageMiddleware(get_wsgi_application())
