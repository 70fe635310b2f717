"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) work without the internet: every script,
style and icon they load, and the document they show, come from the server itself."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from tests.support import Api


class _References(HTMLParser):
    """Every URL a page makes the browser load: ``src``, ``href``, ``spec-url``."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in {"src", "href", "spec-url"} and value:
                self.urls.append(value)


def references(html: str) -> list[str]:
    parser = _References()
    parser.feed(html)
    # Swagger UI is given its document in a script: ``url: '/openapi.json'``.
    parser.urls += re.findall(r"""\burl:\s*['"]([^'"]+)['"]""", html)
    return parser.urls


@pytest.mark.parametrize(
    ("page", "expected"),
    [
        ("/docs", {"swagger-ui-bundle.js", "swagger-ui.css"}),
        ("/redoc", {"redoc.standalone.js"}),
    ],
)
async def test_a_docs_page_loads_everything_from_the_server(
    api: Api, page: str, expected: set[str]
) -> None:
    response = await api.get(page)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert not re.search(r"https?://", html), "the page names another host"
    urls = references(html)
    assert "/openapi.json" in urls
    assert expected <= {url.rsplit("/", 1)[-1] for url in urls}, urls
    for url in urls:
        assert url.startswith("/"), url
        asset = await api.get(url)
        assert asset.status_code == 200, (url, asset.status_code)
        assert len(asset.content) > 0, url
        if url.endswith(".js"):
            assert "javascript" in asset.headers["content-type"], url
        if url.endswith(".css"):
            assert asset.headers["content-type"].startswith("text/css"), url


async def test_the_assets_are_not_in_the_document(api: Api) -> None:
    """The pages and their files are the server's, not part of the API."""
    document = (await api.get("/openapi.json")).json()
    assert not [path for path in document["paths"] if path.startswith(("/docs", "/redoc"))]
