"""The reverse-proxy origin (``serve --upstream``): any HTTP origin, or a bucket of an object store,
public or private (the proxy then signs its own requests).

    app.py        ProxyApp: the WSGI app that forwards (pool, timeouts, streamed bodies, 502/504)
    upstream.py   where the bucket is (virtual-host or path style) and how clients name it
    signing.py    our signatures: S3 SigV4 by botocore, OSS V1/V4 by auth.py; the credentials
    access.py     who may go through a proxy that signs
"""

from __future__ import annotations

from .access import ProxyAccess
from .app import ProxyApp
from .signing import signer_from_config

__all__ = ["ProxyAccess", "ProxyApp", "proxy_from_config"]


def proxy_from_config(config, environ=None) -> ProxyApp:
    """The proxy the settings describe: upstream_* and, for a signing proxy, the credentials, ACLs
    and upstream_originals that decide who may go through. Raises ValueError when they do not fit
    together or the signing credentials cannot be found."""
    return ProxyApp(config.upstream, config.upstream_connect_timeout, config.upstream_read_timeout,
                    config.upstream_pool_size, bucket=config.upstream_bucket,
                    addressing=config.upstream_addressing, signer=signer_from_config(config, environ),
                    access=ProxyAccess.from_config(config))
