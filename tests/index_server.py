"""A package index on 127.0.0.1 for the tests, serving the answers recorded in tests/fixtures/index.

One server, one behaviour per path prefix:

- ``/good/simple/<project>/``: the recorded PEP 691 JSON;
- ``/html/simple/<project>/``: the same files as a PEP 503 HTML page;
- ``/unknown/simple/torch/``: the recorded torch page plus a 2.16.0 release the tables do not know;
- ``/garbage/simple/<project>/``: 200 with a JSON content type and a body that is not JSON;
- ``/hang/simple/<project>/``: accepts the request and never answers (until the server stops);
- ``/pytorch/whl/torch/``: PyTorch's own index page (PEP 503, local-version wheels; see the README);
- anything else: 404.
"""

from __future__ import annotations

import copy
import html
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "index"
JSON_TYPE = "application/vnd.pypi.simple.v1+json"


def recorded(project: str) -> dict:
    return json.loads((FIXTURES / "simple" / project / "index.json").read_text())


def with_unknown_torch() -> dict:
    """The recorded torch page and a torch 2.16.0 built like 2.15.0 (same tags, a later upload time)."""
    page = copy.deepcopy(recorded("torch"))
    extra = []
    for f in page["files"]:
        if f["filename"].startswith("torch-2.15.0-"):
            new = dict(f, filename=f["filename"].replace("2.15.0", "2.16.0"), **{"upload-time": "2026-12-20T12:00:00Z"})
            new["url"] = f"../../files/{new['filename']}"
            extra.append(new)
    page["files"] += extra
    page["versions"] = page["versions"] + ["2.16.0"]
    return page


def as_html(page: dict) -> bytes:
    rows = []
    for f in page["files"]:
        attrs = f'href="{html.escape(f["url"])}"'
        if f.get("requires-python"):
            attrs += f' data-requires-python="{html.escape(f["requires-python"])}"'
        if f.get("yanked"):
            attrs += ' data-yanked=""'
        rows.append(f"<a {attrs}>{html.escape(f['filename'])}</a><br/>")
    return ("<!DOCTYPE html><html><body>\n" + "\n".join(rows) + "\n</body></html>\n").encode()


class _Handler(BaseHTTPRequestHandler):
    stop: threading.Event

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, body: bytes, content_type: str, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        parts = [p for p in self.path.split("?")[0].split("/") if p]
        if parts[:3] == ["pytorch", "whl", "torch"]:
            return self._send((FIXTURES / "pytorch-whl-torch.html").read_bytes(), "text/html")
        if len(parts) != 3 or parts[1] != "simple":
            return self._send(b"not found", "text/plain", 404)
        mode, _, project = parts
        if mode == "hang":
            self.stop.wait(30)
            return None
        if mode == "garbage":
            return self._send(b"<html>this is a captive portal, not an index</html>", JSON_TYPE)
        if mode == "unknown" and project == "torch":
            return self._send(json.dumps(with_unknown_torch()).encode(), JSON_TYPE)
        if not (FIXTURES / "simple" / project / "index.json").is_file():
            return self._send(b"not found", "text/plain", 404)
        if mode == "html":
            return self._send(as_html(recorded(project)), "text/html; charset=utf-8")
        if mode in ("good", "unknown"):
            return self._send(json.dumps(recorded(project)).encode(), JSON_TYPE)
        return self._send(b"not found", "text/plain", 404)


class IndexServer:
    def __init__(self) -> None:
        stop = threading.Event()
        self.stop = stop
        handler = type("Handler", (_Handler,), {"stop": stop})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, mode: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{mode}/simple"

    @property
    def pytorch(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/pytorch/whl"

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def serve() -> Iterator[IndexServer]:
    server = IndexServer()
    try:
        yield server
    finally:
        server.close()
