"""URLs of the minimal Django project.

/media/<path>    django.views.static.serve over MEDIA_ROOT (FileResponse + Last-Modified, conditional GET)
/files/<name>    a plain view answering FileResponse(open(...)): Django hands the open file to the
                 server's wsgi.file_wrapper
/private/<path>  the same files as /media/, only with the header X-Api-Key or the cookie "session"
                 equal to settings.PRIVATE_TOKEN; otherwise Django's own 403 page
"""

from django.conf import settings
from django.core.exceptions import PermissionDenied, SuspiciousFileOperation
from django.http import FileResponse, Http404
from django.urls import path, re_path
from django.utils._os import safe_join
from django.views.static import serve


def file_view(request, name):
    try:
        handle = open(safe_join(settings.MEDIA_ROOT, name), "rb")
    except (OSError, SuspiciousFileOperation) as exc:   # missing, a directory, or outside the root
        raise Http404(name) from exc
    return FileResponse(handle)   # Content-Type and Content-Length from the file; no validator


def private_view(request, key):
    token = settings.PRIVATE_TOKEN
    if request.headers.get("X-Api-Key") != token and request.COOKIES.get("session") != token:
        raise PermissionDenied
    return serve(request, key, document_root=settings.MEDIA_ROOT)


urlpatterns = [
    re_path(r"^media/(?P<path>.*)$", serve, {"document_root": settings.MEDIA_ROOT}),
    path("files/<path:name>", file_view),
    re_path(r"^private/(?P<key>.*)$", private_view),
]
