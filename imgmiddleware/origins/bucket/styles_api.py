"""The style API of a bucket: PutStyle, GetStyle, ListStyle, DeleteStyle (``?style``).

As on OSS, a style's content is stored as it is sent (``csdar5324`` is read back; it fails only when
used), an empty one is "Style content is invalid.", and GetStyle / ListStyle show the bucket's own
styles: those set through this API and the operator's ``[bucket.<name>]`` table. The operator-wide
styles (the ``[all]`` table, ``Config.styles``) still apply to every bucket's images; they are not
the bucket's, so the API does not list them.
"""

from __future__ import annotations

import re
from xml.sax.saxutils import unescape

from ...errors import OssError
from .wire import empty, iso, text, xml_response


def _style_xml(style) -> str:
    return (f"<Style><Name>{text(style.name)}</Name><Content>{text(style.content)}</Content>"
            f"<Category>image</Category><CreateTime>{iso(style.created)}</CreateTime>"
            f"<LastModifyTime>{iso(style.modified)}</LastModifyTime></Style>")


def style_api(styles, environ, method: str, bucket: str, params: dict):
    if styles is None:
        raise OssError("NotImplemented", "Styles are not configured.")
    name = params.get("styleName")
    if method == "GET" and name is None:
        items = "".join(_style_xml(s) for s in styles.list_own(bucket))
        return xml_response(f"<StyleList>{items}</StyleList>")
    if name is None:
        raise OssError("InvalidArgument", "The parameter styleName is missing.")
    if method == "PUT":
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0) or -1)
        match = re.search(rb"<Content>(.*?)</Content>", body, re.S)
        content = unescape(match.group(1).decode("utf-8")).strip() if match else ""
        if not content:
            raise OssError("InvalidArgument", "Style content is invalid.")
        styles.put(bucket, name, content)
        return empty(200)
    if method == "GET":
        style = styles.get_own(bucket, name)
        if style is None:
            raise OssError("NoSuchStyle", "The specified style does not exist.")
        return xml_response(_style_xml(style))
    if method == "DELETE":
        styles.delete(bucket, name)
        return empty(204)
    raise OssError("MethodNotAllowed", "The specified method is not allowed.", status=405)
