"""The API documentation pages work without internet: every file they load is served from here."""

from __future__ import annotations

import base64
import hashlib
import re
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient

# What each kind of file the pages load must be answered as (X-Content-Type-Options: nosniff).
TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png", ".json": "application/json"}


class Links(HTMLParser):
    """Every URL a page loads: scripts, stylesheets, icons, images, ReDoc's spec; and its inline scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name in ("src", "href", "spec-url", "data"):
            if values.get(name):
                self.urls.append(str(values[name]))
        self._in_script = tag == "script" and "src" not in values

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.inline.append(data)


def links(html: str) -> Links:
    parser = Links()
    parser.feed(html)
    # Swagger UI is told where the OpenAPI document is inside its inline script.
    parser.urls += re.findall(r"url: '([^']*)'", " ".join(parser.inline))
    return parser


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_a_docs_page_loads_only_local_files(client: TestClient, page: str) -> None:
    r = client.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    found = links(r.text)
    assert any(u.endswith(".js") for u in found.urls) and any(u.endswith(".json") for u in found.urls)
    for url in found.urls:
        assert url.startswith("/") and not url.startswith("//"), url  # a path on this server
        asset = client.get(url)
        assert asset.status_code == 200, url
        kind = TYPES[url[url.rindex(".") :]]
        assert kind in asset.headers["content-type"], (url, asset.headers["content-type"])
        assert asset.headers["x-content-type-options"] == "nosniff", url
        assert asset.headers["cache-control"] == "no-store", url
    assert (r.headers["x-content-type-options"], r.headers["cache-control"]) == ("nosniff", "no-store")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_a_docs_page_allows_its_own_inline_script_only(client: TestClient, page: str) -> None:
    r = client.get(page)
    directives = dict(d.strip().split(" ", 1) for d in r.headers["content-security-policy"].split(";"))
    assert directives["default-src"] == "'none'" and directives["frame-ancestors"] == "'none'"
    scripts = directives["script-src"].split()
    assert "'unsafe-inline'" not in scripts and "'unsafe-eval'" not in scripts
    hashes = {
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
        for s in links(r.text).inline
    }
    assert set(scripts) == {"'self'", *hashes}
    assert not [v for v in directives.values() if "http" in v]  # nothing from another origin
    # The policy is the docs pages' own: the API and its assets are answered as before.
    for other in ("/openapi.json", "/healthz", "/docs/assets/swagger-ui-bundle.js"):
        assert "content-security-policy" not in client.get(other).headers, other


def test_the_cdn_pages_are_gone(client: TestClient) -> None:
    for page in ("/docs", "/redoc"):
        assert "cdn" not in client.get(page).text.lower(), page
    assert client.get("/docs/assets/no-such-file.js").status_code == 404
    assert client.get("/docs/assets/%2e%2e/%2e%2e/routes/docs.py").status_code == 404
