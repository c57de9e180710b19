"""A minimal, real Flask app serving tests/fixtures, wrapped by the middleware exactly as the README shows.

    gunicorn tests.frameworks.flask_app:app     (from the repository root)

/media/<name>    send_from_directory over tests/fixtures (ETag, Last-Modified, wsgi.file_wrapper)
/private/<name>  the same files, only with the header X-Api-Key or the cookie "session" equal to
                 PRIVATE_TOKEN; otherwise Flask's own 403 page
"""

from pathlib import Path

from flask import Flask, abort, request, send_from_directory

from imgmiddleware import ImageMiddleware

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
PRIVATE_TOKEN = "letmein"


def create_app() -> Flask:
    app = Flask(__name__)

    @app.get("/media/<path:name>")
    def media(name):
        return send_from_directory(FIXTURES, name)

    @app.get("/private/<path:name>")
    def private(name):
        if request.headers.get("X-Api-Key") != PRIVATE_TOKEN and request.cookies.get("session") != PRIVATE_TOKEN:
            abort(403)
        return send_from_directory(FIXTURES, name)

    return app


app = create_app()
app.wsgi_app = ImageMiddleware(app.wsgi_app)
