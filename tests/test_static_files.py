"""The site serves its own static files under uvicorn, as the README runs it: `make run`
(DEBUG=1, straight from the source tree) and production (DEBUG=0, after `collectstatic`:
hashed names cached for a year, gzip and brotli). Over HTTP against the subprocess server."""

from __future__ import annotations

import gzip
import http.client
import re
from pathlib import Path

import brotli
import httpx
import pytest
from django.test import AsyncClient, Client

from gatewaysite.staticfiles import StaticFilesMiddleware
from tests.processes import ROOT

SOURCE = ROOT / "static"
YEAR = "max-age=315360000, public, immutable"


def raw_status(url: str, path: str) -> int:
    """The status for `path` sent as it is (httpx would resolve the dot segments)."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    finally:
        connection.close()


def linked(page: str, name: str) -> str:
    """The URL path of the stylesheet or script a page links whose name starts with `name`."""
    match = re.search(rf'(?:href|src)="(/static/{re.escape(name)}[^"]*)"', page)
    assert match, f"{name} is not linked from the page"
    return match.group(1)


def assert_same_file(response: httpx.Response, source: Path) -> None:
    assert response.status_code == 200, response.request.url
    assert response.content == source.read_bytes(), response.request.url


@pytest.mark.slow
@pytest.mark.parametrize("debug", [True, False], ids=["debug-1", "debug-0"])
def test_admin_dashboard_and_favicon_files_are_served(site, debug):
    server = site(debug=debug)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        login = client.get("/admin/login/")
        assert login.status_code == 200
        css = linked(login.text, "admin/css/base.")
        svg_icon = linked(login.text, "favicon.")

        admin_css = client.get(css)
        assert admin_css.status_code == 200
        assert admin_css.headers["content-type"].startswith("text/css")
        assert b"#header" in admin_css.content

        assert_same_file(client.get("/static/reports/charts.js"), SOURCE / "reports/charts.js")
        assert_same_file(
            client.get("/static/vendor/chartjs/chart.umd.min.js"),
            SOURCE / "vendor/chartjs/chart.umd.min.js",
        )
        favicon = client.get("/favicon.ico")
        assert_same_file(favicon, SOURCE / "favicon.ico")
        assert favicon.headers["content-type"] in {"image/x-icon", "image/vnd.microsoft.icon"}
        icon = client.get(svg_icon)
        assert_same_file(icon, SOURCE / "favicon.svg")
        assert icon.headers["content-type"].startswith("image/svg+xml")

        # Revalidation: an unchanged file costs a 304 and no body.
        again = client.get(css, headers={"If-None-Match": admin_css.headers["etag"]})
        assert (again.status_code, again.content) == (304, b"")

        # Nothing outside the static files, however the path is spelled.
        for path in (
            "/static/nope.css",
            "/static/../gatewaysite/settings.py",
            "/static/%2e%2e/gatewaysite/settings.py",
            "/static/admin/..%2f..%2f..%2f..%2fgatewaysite/settings.py",
            "/static/reports/../../manage.py",
        ):
            assert raw_status(server.url, path) == 404, path
        assert client.post(css).status_code == 405

        if debug:
            # make run: the source files as they are, revalidated on every use.
            assert css == "/static/admin/css/base.css"
            assert admin_css.headers["cache-control"] == "max-age=0, public"
        else:
            # production: content-hashed names, cached for a year, compressed variants
            assert re.fullmatch(r"/static/admin/css/base\.[0-9a-f]{12}\.css", css)
            assert admin_css.headers["cache-control"] == YEAR
            assert icon.headers["cache-control"] == YEAR
            assert "accept-encoding" in admin_css.headers["vary"].lower()
            for encoding, decompress in (("br", brotli.decompress), ("gzip", gzip.decompress)):
                packed = client.get(css, headers={"Accept-Encoding": encoding})
                assert packed.headers["content-encoding"] == encoding
                assert int(packed.headers["content-length"]) < len(admin_css.content) / 2
                # httpx decodes for us; compare with the raw bytes decompressed by hand too
                assert packed.content == admin_css.content
                with client.stream("GET", css, headers={"Accept-Encoding": encoding}) as raw:
                    assert decompress(b"".join(raw.iter_raw())) == admin_css.content
            # the unhashed names still answer (for links outside the pages), briefly cached
            assert client.get("/static/reports/charts.js").headers["cache-control"] == (
                "max-age=60, public"
            )
    # Served by the async middleware: no thread-buffered sync file iterator, no warnings.
    output = server.output()
    assert "synchronous iterators" not in output
    assert "Traceback" not in output


# In process (the test process serves from the source tree, tests/conftest.py): the same
# middleware in Django's sync chain (WSGI, runserver) and in its async one (ASGI).


def test_the_sync_chain_streams_the_file():
    response = Client().get("/static/reports/charts.js")
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == (SOURCE / "reports/charts.js").read_bytes()
    assert Client().get("/favicon.ico").status_code == 200


async def test_the_async_chain_answers_static_paths_and_passes_the_others_on():
    client = AsyncClient()
    response = await client.get("/favicon.ico")
    assert response.status_code == 200
    assert response.content == (SOURCE / "favicon.ico").read_bytes()
    assert response["Content-Type"] == "image/x-icon"
    assert (await client.head("/static/reports/charts.js")).content == b""
    assert (await client.get("/static/missing.js")).status_code == 404
    assert (await client.get("/admin/login/")).status_code == 200  # not a static path


def test_a_production_server_without_collectstatic_says_so_when_it_starts(
    settings, tmp_path, caplog
):
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
    }
    settings.STATIC_ROOT = tmp_path
    settings.WHITENOISE_AUTOREFRESH = settings.WHITENOISE_USE_FINDERS = False
    StaticFilesMiddleware(lambda request: None)
    assert "run `python manage.py collectstatic --noinput`" in caplog.text

    (tmp_path / "staticfiles.json").write_text('{"paths": {}, "version": "1.1"}')
    caplog.clear()
    StaticFilesMiddleware(lambda request: None)
    assert caplog.text == ""
