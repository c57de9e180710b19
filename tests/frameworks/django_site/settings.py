"""Settings of the minimal Django project: no database, no templates, DEBUG off (production pages).

MEDIA_ROOT is tests/fixtures; urls.py serves it at /media/ with Django's own static-serving view and
at /files/ with a plain FileResponse view, and guards /private/ with an API key header or cookie.
"""

from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent.parent / "fixtures"

SECRET_KEY = "imgmiddleware-tests-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]
ROOT_URLCONF = "tests.frameworks.django_site.urls"
WSGI_APPLICATION = "tests.frameworks.django_site.wsgi.application"

INSTALLED_APPS: list[str] = []
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]
DATABASES: dict = {}
TEMPLATES: list = []
USE_TZ = True

MEDIA_ROOT = FIXTURES
MEDIA_URL = "/media/"

# What the /private/ views accept: the header X-Api-Key or the cookie "session", with this value.
PRIVATE_TOKEN = "letmein"
