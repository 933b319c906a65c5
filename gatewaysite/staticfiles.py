"""The site's static files (the admin's, the dashboards', the favicon), served by the app
itself with WhiteNoise, in both modes and under uvicorn.

WhiteNoise gives the index of files, the compressed variants (`.br`, `.gz`) chosen by
`Accept-Encoding`, the cache headers (a year and `immutable` for the hashed names that
`collectstatic` writes), `ETag`/`Last-Modified` answers and byte ranges. Its Django middleware
is sync only (6.x), and two things follow from that under ASGI:

- one sync middleware in the chain makes Django run the whole site chain (admin and
  dashboards alike) through a thread and back, on every request;
- its file response is a sync iterator, which Django's ASGI handler reads whole in a thread
  after a `Warning` ("StreamingHttpResponse must consume synchronous iterators").

So this subclass is async-capable: in the async chain it looks the path up in WhiteNoise's
in-memory index (no I/O unless DEBUG), and only a static file's answer is built in a worker
thread, its body read whole there: the files are small (the largest, Chart.js, is 200 KB,
70 KB compressed) and browsers keep the hashed ones for a year. Anything else goes on to
the rest of the chain untouched. The API paths (/v1…) never reach this middleware: the ASGI
router (gatewaysite/asgi.py) sends them to their own handler without middleware.

With DEBUG on, files are found through the staticfiles finders on each request (edits show
at once, no `collectstatic` needed); with DEBUG off only what `collectstatic` wrote to
STATIC_ROOT is served, under the hashed names of the manifest storage (settings.STORAGES).
"""

from __future__ import annotations

import logging
from pathlib import Path

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.contrib.staticfiles.storage import staticfiles_storage
from django.http import HttpResponse
from whitenoise.middleware import WhiteNoiseMiddleware

# Files browsers ask for at the site's root, served from STATIC_ROOT like every other file.
ROOT_FILES = {"/favicon.ico": "favicon.ico"}

log = logging.getLogger(__name__)


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    sync_capable = True
    async_capable = True

    def __init__(self, get_response) -> None:
        super().__init__(get_response)
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)
        name = getattr(staticfiles_storage, "manifest_name", None)  # the manifest storage's
        if name and not (Path(self.static_root or ".") / name).exists():
            # Every page naming a static file would answer 500: say why once, at start.
            log.error(
                "No static files manifest at %s: run `python manage.py collectstatic "
                "--noinput` with this environment before starting the server",
                Path(self.static_root or ".") / name,
            )

    def static_url(self, path: str) -> str | None:
        """The static file URL a request path names, or None for every other path (which
        then never touches the file system)."""
        if path in ROOT_FILES:
            return self.static_prefix + ROOT_FILES[path]
        return path if path.startswith(self.static_prefix) else None

    def lookup(self, url: str):
        return self.find_file(url) if self.autorefresh else self.files.get(url)

    def __call__(self, request):
        if self.async_mode:
            return self.__acall__(request)
        url = self.static_url(request.path_info)
        static_file = None if url is None else self.lookup(url)
        if static_file is None:
            return self.get_response(request)
        return self.serve(static_file, request)

    async def __acall__(self, request):
        url = self.static_url(request.path_info)
        if url is None:
            return await self.get_response(request)
        if self.autorefresh:  # DEBUG: the finders stat the app directories
            static_file = await sync_to_async(self.find_file, thread_sensitive=False)(url)
        else:
            static_file = self.files.get(url)  # the index in memory
        if static_file is None:
            return await self.get_response(request)
        return await sync_to_async(self.serve_whole, thread_sensitive=False)(static_file, request)

    @staticmethod
    def serve_whole(static_file, request) -> HttpResponse:
        """WhiteNoise's answer with its body read whole (this runs in a worker thread)."""
        answer = static_file.get_response(request.method, request.META)
        body = b""
        if answer.file is not None:
            with answer.file:
                body = answer.file.read()
        response = HttpResponse(body, status=int(answer.status))
        del response["Content-Type"]  # WhiteNoise's headers name the file's own type
        for name, value in answer.headers:
            response[name] = value
        return response
