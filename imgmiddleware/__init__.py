"""imgmiddleware: Alibaba Cloud OSS image processing (x-oss-process) as WSGI middleware, on OpenCV."""

from .config import Config
from .errors import OssError

__all__ = ["Config", "ImageMiddleware", "OssError"]
__version__ = "0.1.0"


def __getattr__(name: str):
    """ImageMiddleware is imported on first use, so that importing the package (as gunicorn's
    master does, through the command line) loads neither OpenCV nor NumPy: only workers need them,
    and the master stays about 50 MB smaller."""
    if name == "ImageMiddleware":
        from .middleware import ImageMiddleware
        return ImageMiddleware
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
