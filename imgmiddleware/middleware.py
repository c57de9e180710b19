"""ImageMiddleware: OSS image processing in front of any WSGI app that serves files or objects.

A request without the exact lower-case ``x-oss-process`` query parameter (or header) goes to the
wrapped app untouched: same environ, same streamed answer. A processed GET or HEAD travels one way:

    parse + validate the process string (400 before any I/O)
    -> the client's If-None-Match / If-Modified-Since: asked of the app as a conditional GET; its 304
       is ours (the result's ETag is the source's, as on OSS)
    -> cache: the object's remembered validator -> result key -> entry (memory, disk, Redis)?
       revalidate it (conditional GETs for the source and every watermark image, unless each was
       confirmed within validator_trust_seconds) -> 304s: serve it, the source unread
    -> GET subrequest to the wrapped app (Range / conditional headers removed)
       not 200: the app's answer passes through unchanged; a NoSuchKey 404 is re-issued with IMG's EC
    -> single-flight: probe, limits, plan, decode once, actions in order, encode once -> store
    -> answer with the output's Content-Type and Content-Length and the source's ETag and Last-Modified
"""

from __future__ import annotations

import functools
import logging
import time
from contextlib import contextmanager
from itertools import chain
from urllib.parse import unquote

from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_accept_header
from werkzeug.wsgi import FileWrapper

from .auth import SignedRequest, verify
from .cache import Entry, LeaderBusy, Memo, ResultCache, result_key
from .config import Config
from .errors import NO_SUCH_KEY_EC, OssError, missing_source, new_request_id
from .imaging.fonts import font_table_for
from .process import parse, run
from .process.engine import inspect, load_image
from .process.parser import parse_post
from .styles import StyleStore
from .telemetry import FACTS
from .throttle import Throttle
from .subrequest import (PATH_STYLE_KEY, PRINCIPAL_KEY, PROCESS_PARAM, ClosingIterable, PlainAddressing,
                         Upstream, call, conditional_environ, is_object_key, object_environ,
                         process_string, query_pairs, source_environ, validator_of)

log = logging.getLogger("imgmiddleware")

# Source headers a processed answer keeps (spec §3.5). Not Content-MD5 or x-oss-hash-crc64ecma: they
# describe the stored bytes, not ours, and SDKs would reject the body.
KEPT_SOURCE_HEADERS = ("ETag", "Last-Modified", "Cache-Control", "Expires", "Content-Disposition",
                       "Content-Language")
PROCESSED_METHODS = ("GET", "HEAD")
CACHE_HEADER = "x-imgmw-cache"   # hit | revalidated | trusted | miss | bypass, for operators


class ImageMiddleware:
    """Wrap ``app``; answer ``?x-oss-process=image/...`` requests with the transformed object.

    ``config`` is an :class:`imgmiddleware.Config`; keyword arguments override single fields, e.g.
    ``ImageMiddleware(app, jpeg_quality=85)``. ``addressing`` says which bucket and key a request
    names and where another object (a watermark image, a saveas target) lives: the default has no
    buckets and puts every key at ``/<key>``; the bundled bucket app brings its own
    (:class:`imgmiddleware.origins.bucket.BucketAddressing`).
    ``style_store`` is a :class:`imgmiddleware.styles.StyleStore` (default: the config's
    ``styles_file`` and ``styles``).
    """

    def __init__(self, app, config: Config | None = None, addressing=None, style_store=None,
                 **overrides) -> None:
        self.app = app
        config = config or Config()
        self.config = config.replace(**overrides) if overrides else config
        self.addressing = addressing or PlainAddressing()
        self.styles = style_store or StyleStore(self.config.styles_file or None, inline=self.config.styles)
        cfg = self.config
        self.throttle = Throttle(cfg.transform_slots, cfg.large_transform_slots, cfg.large_image_pixels,
                                 cfg.transform_wait_seconds, cfg.retry_after_seconds,
                                 cfg.worker_transform_bytes)
        # memory, disk and (cache_redis_url) the tier shared by every node
        self.cache = ResultCache.from_config(self.config)
        # The config is frozen; the font table joins it because which file draws a font name changes
        # the pixels of text watermarks (a font installed later must not be hidden by the cache).
        fonts = font_table_for(self.config)
        self.fingerprint = self.config.output_fingerprint() + ";fonts=" + fonts.fingerprint
        self._parsed = functools.lru_cache(maxsize=1024)(self._parse)
        # The style viewer page (issue 10), only when configured; it is a plain client of this server.
        self.viewer = None
        if cfg.viewer_path:
            from .viewer import Viewer
            self.viewer = Viewer(cfg.viewer_path)

    def __call__(self, environ, start_response):
        facts = environ.get(FACTS)
        if facts is not None:        # the server layer's record of this request (telemetry/)
            facts["addressing"] = self.addressing
            facts["kind"] = "style" if _style_api(environ) else "plain"
        if self.viewer is not None and self.viewer.matches(environ):
            if facts is not None:
                facts["kind"] = "viewer"
            return self.viewer(environ, start_response)
        method = environ.get("REQUEST_METHOD", "GET")
        if method == "POST" and any(key == PROCESS_PARAM
                                    for _, key, _ in query_pairs(environ.get("QUERY_STRING", ""))):
            return SaveRequest(self, environ, start_response, "").answer()
        if method not in PROCESSED_METHODS:
            return self.app(environ, start_response)
        process = process_string(environ)
        signed_environ = environ
        if process is None and self.config.style_delimiters:
            routed = self._delimited(environ)
            if routed is not None:
                environ, process = routed
        if process is None:
            if self.config.protected and self._protected(environ):
                return Request(self, environ, start_response, "").guard_plain_get()
            return self.app(environ, start_response)
        return Request(self, environ, start_response, process, signed_environ).answer()

    def parsed(self, process: str, bucket: str = ""):
        """(pipeline, canonical string) of a process string. Both depend only on the string and the
        frozen config, so recent ones are memoised (an invalid string raises and is not); style/
        strings are not, since styles can change at any time."""
        if "style/" in process:
            pipeline = parse(process, self.config, self.styles.mapping(bucket))
            return pipeline, pipeline.canonical()
        return self._parsed(process)

    def _protected(self, environ) -> bool:
        rules = self.config.protected.get(self.addressing.bucket_of(environ))
        if not rules:
            return False
        key = self.addressing.key_of(environ)
        return (any(key.startswith(p) for p in rules.get("prefixes", ()))
                or any(key.endswith(s) for s in rules.get("suffixes", ())))

    def _delimited(self, environ):
        """``key!name`` (spec §1.3): the style ``name`` on ``key``, when ``name`` is a style of the
        bucket and the whole path is not itself an object (that one is tried first)."""
        path = environ.get("PATH_INFO", "")
        cut = max(path.rfind(d) for d in self.config.style_delimiters)
        if cut <= 0:
            return None
        name = path[cut + 1:]
        if not name or self.styles.get(self.addressing.bucket_of(environ), name) is None:
            return None
        probe = object_environ(environ, path)
        probe["QUERY_STRING"] = environ.get("QUERY_STRING", "")
        probe["REQUEST_METHOD"] = "HEAD"
        if self.config.credentials:
            # The client signed a GET: the app would check its signature against our HEAD and refuse
            # it, and a signed GET of a real key "a!small" would be styled. Tell it who is asking.
            try:
                principal = verify(signed_request(self, environ), self.config.credentials,
                                   region=self.config.region)
            except OssError:
                return None      # a bad signature: the plain request gets the app's refusal
            probe[PRINCIPAL_KEY] = principal or ""
        upstream = call(self.app, probe)
        upstream.close()
        if upstream.status_code == 200:
            return None
        return dict(environ, PATH_INFO=path[:cut]), "style/" + name

    def _parse(self, process: str):
        pipeline = parse(process, self.config)
        return pipeline, pipeline.canonical()


class Request:
    """One processed request: its state and the steps of its one-way trip."""

    def __init__(self, middleware: ImageMiddleware, environ, start_response, process: str,
                 signed_environ=None) -> None:
        self.mw = middleware
        self.app = middleware.app
        self.config = middleware.config
        self.cache = middleware.cache
        self.environ = environ
        self.signed_environ = signed_environ if signed_environ is not None else environ
        self.start_response = start_response
        self.process = process
        self.request_id = new_request_id()
        self.head = environ["REQUEST_METHOD"] == "HEAD"
        self.vary = ("Vary", "Accept") if self.config.auto_formats else None
        self.server_timing = ""
        self.facts = environ.get(FACTS)

    def _note(self, **facts) -> None:
        """What this request learnt, for the server layer's log and metrics (telemetry/)."""
        if self.facts is not None:
            self.facts.update(facts)

    def answer(self):
        try:
            self.bucket = self.mw.addressing.bucket_of(self.environ)
            self._note(kind="processed", bucket=self.bucket, process=self.process)
            self._authorize()            # who asks comes first: a stranger learns nothing of styles
            self.pipeline, canonical = self.mw.parsed(self.process, self.bucket)
            self.auto_formats = self._negotiate()
            self.identity = self._identity()
            self.canonical = canonical + (
                "|auto:" + ",".join(self.auto_formats) if self.auto_formats else "")
            self._note(process=self.canonical)
            return self._answer()
        except OssError as err:
            return self._error(err)
        except Exception:   # a bug or a codec failure must cost one request, never the worker
            log.exception("processing %r failed (request %s)", self.process, self.request_id)
            return self._error(OssError("InternalError",
                                        "We encountered an internal error. Please try again."))

    def _answer(self):
        fetched: Upstream | None = None
        if _is_conditional(self.environ):
            fetched = call(self.app, self._client_conditional())
            if fetched.status_code == 304:
                return self._not_modified(fetched)
            if fetched.status_code != 200:
                return self._pass_through(fetched)

        if fetched is None and self.cache_enabled:
            memo = self.cache.recall(self.identity)
            if memo is not None:
                entry = self.cache.get(self._key(memo.validator))
                if entry is not None:
                    fresh, fetched, asked = self._revalidate(entry, source_memo=memo)
                    if fresh:
                        return self._serve(entry, "revalidated" if asked else "trusted")
                    _close(entry)

        if fetched is None:
            fetched = call(self.app, source_environ(self.environ))
        if fetched.status_code != 200:
            return self._pass_through(fetched)

        validator = validator_of(fetched.headers)
        if not (self.cache_enabled and validator):
            return self._serve(self._compute(fetched), "bypass")
        self.cache.remember(self.identity, validator, confirmed=self.public)
        key = self._key(validator)
        entry = self.cache.get(key)
        if entry is not None:
            fresh, _, _ = self._revalidate(entry, skip_source=True)
            if fresh:
                fetched.close()
                return self._serve(entry, "hit")
            _close(entry)
            self.cache.discard(key)
        try:
            entry, computed = self.cache.single_flight(key, lambda: self._compute(fetched))
        except LeaderBusy:
            # Another request has held this key for cache_wait_seconds and is still at it (a huge
            # image, or a wrapped app that hangs): a clean 503 rather than more threads on it.
            fetched.close()
            raise self.mw.throttle.busy("cache_wait") from None
        if not computed:
            fetched.close()
        return self._serve(entry, "miss" if computed else "hit")

    # --- the pieces -----------------------------------------------------------------------------------

    def _authorize(self) -> None:
        """With credentials configured: verify the signature of the request as the client sent it,
        apply source-image protection, and tell the wrapped app who is asking (PRINCIPAL_KEY)."""
        if not self.config.credentials:
            if self.config.protected and self.mw._protected(self.environ) \
                    and not self.process.startswith("style/"):
                raise protection_error()
            return
        principal = verify(signed_request(self.mw, self.signed_environ), self.config.credentials,
                           region=self.config.region)
        if principal is None:
            acl = self.config.bucket_acl.get(self.bucket, self.config.default_acl)
            if acl == "private":
                raise OssError("AccessDenied", "You have no right to access this object because of "
                               "bucket acl.", "0003-00000001")
            if self.mw._protected(self.environ) and not self.process.startswith("style/"):
                raise protection_error()
        self.environ = dict(self.environ, **{PRINCIPAL_KEY: principal or ""})

    def guard_plain_get(self):
        """A plain GET of a protected key: only a signed request may have the original."""
        try:
            principal = (verify(signed_request(self.mw, self.environ), self.config.credentials,
                                 region=self.config.region)
                         if self.config.credentials else None)
        except OssError as err:
            return self._error(err)
        if principal is None:
            return self._error(OssError("AccessDenied", "You are denied by bucket referer policy "
                                        "(source image protection)."))
        return self.app(dict(self.environ, **{PRINCIPAL_KEY: principal}), self.start_response)

    @property
    def cache_enabled(self) -> bool:
        return bool(self.config.cache_memory_bytes or self.config.cache_dir or self.config.cache_redis_url)

    @property
    def public(self) -> bool:
        """Whether this request is anonymous: no Authorization, no Cookie, no signature (principal).
        Only such requests use or record validator trust: a revalidation is also the wrapped app's
        access check, and what one anonymous client may read every anonymous client may."""
        env = self.environ
        return not (env.get("HTTP_AUTHORIZATION") or env.get("HTTP_COOKIE") or env.get(PRINCIPAL_KEY))

    @property
    def trusting(self) -> bool:
        return self.cache.trust_seconds > 0 and self.public

    def _identity(self) -> str:
        """Which object this is, across hosts (virtual-host buckets) and paths; with other query
        parameters (versionId) but without x-oss-process: the PATH_INFO and QUERY_STRING of
        source_environ(), without copying the environ."""
        query = "&".join(raw for raw, key, _ in query_pairs(self.environ.get("QUERY_STRING", ""))
                         if key != PROCESS_PARAM)
        return self._object_identity(self.environ.get("PATH_INFO", ""), query)

    def _object_identity(self, path: str, query: str) -> str:
        """The identity of an object of the same app as this request (a watermark image) by the path
        and query its conditional GET uses: the memo of each one's version is kept under it."""
        env = self.environ
        return "\n".join((env.get("HTTP_HOST", ""), env.get("SCRIPT_NAME", ""), path, query))

    def _key(self, validator: str) -> str:
        return result_key(self.identity, validator, self.canonical, self.mw.fingerprint)

    def _negotiate(self) -> tuple[str, ...]:
        """The configured auto formats this client accepts explicitly (not through */*)."""
        if not self.config.auto_formats:
            return ()
        accept = parse_accept_header(self.environ.get("HTTP_ACCEPT"), MIMEAccept)
        wanted = {"jpg": "image/jpeg"}
        return tuple(fmt for fmt in self.config.auto_formats
                     if any(value == wanted.get(fmt, "image/" + fmt) and quality > 0
                            for value, quality in accept))

    def _client_conditional(self) -> dict:
        env = source_environ(self.environ)
        for name in ("HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE"):
            if name in self.environ:
                env[name] = self.environ[name]
        return env

    def _revalidate(self, entry: Entry, skip_source: bool = False,
                    source_memo: Memo | None = None) -> tuple[bool, Upstream | None, bool]:
        """(fresh, the changed source's answer, asked): whether every object the entry was made from
        is unchanged, by conditional GETs, skipping each one confirmed within validator_trust_seconds
        (``asked`` is false when none had to be asked). A changed source comes back as its fresh 200
        answer, so the miss that follows does not fetch it again."""
        asked = False
        for index, (path, query, validator) in enumerate(entry.validators):
            if index == 0 and skip_source:
                continue
            identity = self.identity if index == 0 else self._object_identity(path, query)
            if self.trusting:
                memo = source_memo if index == 0 and source_memo is not None else self.cache.recall(identity)
                if self.cache.trusted(memo, validator):
                    continue
            asked = True
            upstream = call(self.app, conditional_environ(self.environ, path, query, validator))
            same = upstream.status_code == 304 or (
                # an app that ignores conditionals: same version, body unread
                upstream.status_code == 200 and validator_of(upstream.headers) == validator)
            if same:
                upstream.close()
                if self.trusting:
                    self.cache.remember(identity, validator)
                continue
            if index == 0 and upstream.status_code == 200:
                return False, upstream, asked
            upstream.close()
            return False, None, asked
        return True, None, asked

    def _compute(self, fetched: Upstream) -> Entry:
        validators = [(self.environ.get("PATH_INFO", ""), source_environ(self.environ)["QUERY_STRING"],
                       validator_of(fetched.headers) or "")]
        started = time.perf_counter()
        body = fetched.read(self.config.max_source_bytes)
        read = time.perf_counter()
        info = inspect(body, self.config, self.pipeline.resizes)   # header only: limits, work size
        admitted = []

        @contextmanager
        def admit(cost):
            """A transform slot for this request, by its pixels and its estimated peak bytes."""
            with self.mw.throttle.slot(info.pixels, cost.peak_bytes):
                admitted.append(time.perf_counter())
                yield

        result = run(self.pipeline, body, self.config, self._object_loader(validators),
                     self.auto_formats, info, admit)
        done = time.perf_counter()
        transform = admitted[0] if admitted else read   # a header-only answer waits for no slot
        # Server-Timing (milliseconds) on the answer that did the work: what the viewer and browser
        # developer tools show; "wait" is the time spent queued for a transform slot.
        self.server_timing = (f"read;dur={(read - started) * 1000:.1f}, "
                              f"wait;dur={(transform - read) * 1000:.1f}, "
                              f"transform;dur={(done - transform) * 1000:.1f}")
        self._note(read=read - started, wait=transform - read, transform=done - transform,
                   decode=result.decode_seconds, encode=result.encode_seconds, format=result.format,
                   source_bytes=len(body), output_bytes=len(result.body))
        headers = [(name, fetched.headers[name]) for name in KEPT_SOURCE_HEADERS if name in fetched.headers]
        headers += [(k, v) for k, v in fetched.headers.items() if k.lower().startswith("x-oss-meta-")]
        if any(not validator for _, _, validator in validators):
            validators = []   # an object we cannot revalidate: the result must not be reused
        return Entry(result.content_type, headers, validators, body=result.body, length=len(result.body))

    def _object_loader(self, validators: list):
        """load_object(key, formats, orient) for this request: other objects through the wrapped app,
        with the request's own headers (so its access rules apply), each key fetched once; each one's
        validator is recorded so a cached result is revalidated against it too."""
        loaded: dict[tuple[str, bool], object] = {}
        config = self.config

        def load_object(key: str, formats: frozenset, orient: bool = True):
            if (key, orient) in loaded:
                return loaded[key, orient]
            missing = OssError("WatermarkError", "The watermark object does not exist.",
                               "0040-00000025")
            if not is_object_key(key):
                raise missing
            path = self.mw.addressing.object_path(self.environ, key)
            upstream = call(self.app, object_environ(self.environ, path))
            if upstream.status_code != 200:
                upstream.close()
                raise missing
            validators.append((path, "", validator_of(upstream.headers) or ""))
            if self.trusting and validators[-1][2]:
                self.cache.remember(self._object_identity(path, ""), validators[-1][2])
            loaded[key, orient] = load_image(upstream.read(config.max_source_bytes), config, formats,
                                             orient)
            return loaded[key, orient]

        return load_object

    # --- answers --------------------------------------------------------------------------------------

    def _serve(self, entry: Entry, how: str):
        headers = [("Content-Type", entry.content_type), ("Content-Length", str(entry.length)),
                   ("x-oss-request-id", self.request_id), (CACHE_HEADER, how)]
        if self.server_timing and how == "miss":
            headers.append(("Server-Timing", self.server_timing))
        headers += self._source_headers(entry.headers)
        self.start_response("200 OK", headers)
        if self.head:
            _close(entry)
            return []
        if entry.file is not None:
            wrapper = self.environ.get("wsgi.file_wrapper", FileWrapper)
            return wrapper(entry.file, 1 << 16)
        return [entry.body]

    def _source_headers(self, source: list[tuple[str, str]]) -> list[tuple[str, str]]:
        headers = [(k, v) for k, v in source if k != "Cache-Control" or not self.config.cache_control]
        if self.config.cache_control:
            headers.append(("Cache-Control", self.config.cache_control))
        if self.vary:
            headers.append(self.vary)
        return headers

    def _not_modified(self, upstream: Upstream):
        upstream.close()
        kept = [(name, upstream.headers[name]) for name in ("ETag", "Last-Modified", "Cache-Control",
                                                            "Expires") if name in upstream.headers]
        if "ETag" not in upstream.headers and self.cache_enabled:
            # a 304 repeats the validator; some apps leave it out, our memo has it
            remembered = self.cache.remembered(self.identity)
            if remembered and not remembered.startswith('W/"lm-'):
                kept.append(("ETag", remembered))
        headers = [("x-oss-request-id", self.request_id), (CACHE_HEADER, "revalidated")]
        headers += self._source_headers(kept)
        self.start_response("304 Not Modified", headers)
        return []

    def _pass_through(self, upstream: Upstream):
        if upstream.status_code == 404 and upstream.headers.get("x-oss-ec") == NO_SUCH_KEY_EC:
            raise missing_source(upstream.read(64 * 1024))   # IMG's EC for the same 404 (issue 18)
        self.start_response(upstream.status, upstream.headers.to_wsgi_list())
        if self.head:
            upstream.close()
            return []
        return ClosingIterable(chain(upstream.written, upstream.body), upstream.close)

    def _error(self, err: OssError):
        self._note(code=err.code)
        host_id = (self.config.host_id or self.environ.get("HTTP_HOST")
                   or self.environ.get("SERVER_NAME", ""))
        status, headers, body = err.to_response(self.request_id, host_id)
        headers.append(("Cache-Control", self.config.cache_control_errors))
        if self.vary:
            headers.append(self.vary)
        self.start_response(status, headers)
        return [] if self.head else [body]


def _style_api(environ) -> bool:
    """PutStyle, GetStyle, ListStyle, DeleteStyle: a bare ``style`` in the query (``/?style``)."""
    query = environ.get("QUERY_STRING", "")
    return "style" in query and any(key == "style" for _, key, _ in query_pairs(query))


def _is_conditional(environ) -> bool:
    return "HTTP_IF_NONE_MATCH" in environ or "HTTP_IF_MODIFIED_SINCE" in environ


def _close(entry: Entry) -> None:
    if entry.file is not None:
        entry.file.close()


class SaveRequest(Request):
    """POST /key?x-oss-process with ``x-oss-process=...|sys/saveas,o_,b_`` (spec §1.5): process the
    object and store the result through the wrapped app with a PUT subrequest."""

    MAX_BODY = 64 * 1024

    def answer(self):
        try:
            self.bucket = self.mw.addressing.bucket_of(self.environ)
            self._note(kind="saveas", bucket=self.bucket)
            body = self._body()
            self.process = "style/" if "style/" in body else "image/"
            self._authorize()
            self.pipeline, saveas = parse_post(body, self.config, self.mw.styles.mapping(self.bucket))
            self.auto_formats = ()
            target_bucket = saveas.bucket or self.bucket
            if not is_object_key(saveas.key) or (saveas.bucket and not _bucket_name_ok(saveas.bucket)):
                raise OssError("InvalidArgument", "The target object or bucket name of sys/saveas is invalid.")
            fetched = call(self.app, source_environ(self.environ))
            if fetched.status_code != 200:
                return self._pass_through(fetched)
            entry = self._compute(fetched)
            stored = call(self.app, self._put_environ(target_bucket, saveas.key, entry))
            if stored.status_code >= 400:
                return self._pass_through(stored)   # the app's own answer: NoSuchBucket, AccessDenied...
            stored.close()
            if stored.status_code not in (200, 201, 204):
                raise OssError("InternalError", f"Saving the result failed ({stored.status}).")
            import json
            payload = json.dumps({"bucket": saveas.bucket, "fileSize": entry.length,
                                  "object": saveas.key, "status": "OK"}).encode("utf-8")
            self.start_response("200 OK", [("Content-Type", "application/json"),
                                           ("Content-Length", str(len(payload))),
                                           ("x-oss-request-id", self.request_id)])
            return [payload]
        except OssError as err:
            return self._error(err)
        except Exception:
            log.exception("saveas failed (request %s)", self.request_id)
            return self._error(OssError("InternalError", "We encountered an internal error. Please try again."))

    def _body(self) -> str:
        length = int(self.environ.get("CONTENT_LENGTH") or 0)
        if length > self.MAX_BODY:
            raise OssError("InvalidArgument", "The request body is too long.")
        raw = self.environ["wsgi.input"].read(length) if length else self.environ["wsgi.input"].read(self.MAX_BODY)
        # oss2 sends the process string raw; ali-oss form-encodes it (querystring.stringify: %2F, %7C,
        # %3D...). %-decode only: a raw '+' (standard base64) stays a '+', never a space.
        return unquote(raw.decode("utf-8"))

    def _put_environ(self, bucket: str, key: str, entry: Entry) -> dict:
        import io
        env = object_environ(self.environ, self.mw.addressing.object_path(self.environ, key, bucket))
        if bucket != self.bucket:
            env[PATH_STYLE_KEY] = True       # the Host of a virtual-host request names the source bucket
        for name in ("HTTP_CONTENT_MD5", "CONTENT_MD5"):
            env.pop(name, None)              # the digest of the POST body (ali-oss sends one), not ours
        env["REQUEST_METHOD"] = "PUT"
        env["wsgi.input"] = io.BytesIO(entry.body)
        env["CONTENT_LENGTH"] = str(entry.length)
        env["CONTENT_TYPE"] = entry.content_type
        return env


def signed_request(mw: ImageMiddleware, environ) -> SignedRequest:
    return SignedRequest.from_environ(environ, mw.addressing.bucket_of(environ),
                                      mw.addressing.key_of(environ))


def protection_error() -> OssError:
    return OssError("AccessDenied", "The object is protected: use a style to access it anonymously.",
                    "0040-00000031")


def _bucket_name_ok(name: str) -> bool:
    import re
    return re.fullmatch(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]", name) is not None
