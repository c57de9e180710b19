"""imgmiddleware: Alibaba Cloud OSS image processing (x-oss-process) as WSGI middleware, on OpenCV."""

from .config import Config
from .errors import OssError
from .middleware import ImageMiddleware

__all__ = ["Config", "ImageMiddleware", "OssError"]
__version__ = "0.1.0"
