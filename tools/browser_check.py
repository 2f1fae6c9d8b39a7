"""Open a published asv dashboard in headless Chromium and check that it works.

Drives Chromium through the DevTools protocol with a small WebSocket client
written on the standard library (no selenium, no driver).  It serves the
dashboard folder on 127.0.0.1, loads the benchmark list and one graph page,
records every JavaScript exception, console error and network request, and
saves a screenshot.

Usage (prints a JSON summary; exit 1 if a check failed):
    python -m tools.browser_check --html .asv/html --graph NAME [--screenshot .asv/dashboard.png]
"""
import argparse
import base64
import contextlib
import functools
import http.server
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
INSTALL_HINT = ("headless Chromium not found: install it with "
                "`apt-get update && apt-get install -y chromium` (Debian/Ubuntu), "
                "or set CHROMIUM=/path/to/chromium")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--mute-audio",
    "--window-size=1280,900", "--remote-debugging-port=0",
]


def find_chromium():
    env = os.environ.get("CHROMIUM")
    if env:
        return env if os.path.exists(env) else None
    for cand in CHROMIUM_CANDIDATES:
        if os.path.exists(cand):
            return cand
    return shutil.which("chromium")


class WebSocket:
    """Just enough of RFC 6455 for the DevTools protocol on localhost."""

    def __init__(self, url, timeout=30):
        u = urllib.parse.urlparse(url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        req = (f"GET {u.path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\n"
               "Upgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
        self.sock.sendall(req.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("DevTools closed the connection during the handshake")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"WebSocket handshake refused: {head[:200]!r}")

    def _recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("DevTools connection closed")
            buf += chunk
        return buf

    def send(self, text):
        data = text.encode()
        header = bytearray([0x81])  # FIN + text frame
        n = len(data)
        if n < 126:
            header.append(0x80 | n)
        elif n < 1 << 16:
            header.append(0x80 | 126)
            header += struct.pack(">H", n)
        else:
            header.append(0x80 | 127)
            header += struct.pack(">Q", n)
        mask = os.urandom(4)
        header += mask
        self.sock.sendall(bytes(header) + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def recv(self):
        message = b""
        while True:
            b1, b2 = self._recv_exact(2)
            fin, opcode = b1 & 0x80, b1 & 0x0F
            n = b2 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._recv_exact(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._recv_exact(8))[0]
            mask = self._recv_exact(4) if b2 & 0x80 else None
            payload = self._recv_exact(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x8:
                raise ConnectionError("DevTools closed the connection")
            if opcode == 0x9:  # ping -> pong
                self.sock.sendall(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
                continue
            if opcode in (0x0, 0x1, 0x2):
                message += payload
                if fin:
                    return message.decode()

    def close(self):
        with contextlib.suppress(OSError):
            self.sock.close()


class DevTools:
    """A DevTools session on one page, collecting the events it sees."""

    def __init__(self, ws_url):
        self.ws = WebSocket(ws_url)
        self.next_id = 0
        self.events = []

    def call(self, method, params=None, timeout=30):
        self.next_id += 1
        my_id = self.next_id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)
        raise TimeoutError(method)

    def evaluate(self, expression):
        res = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                             "awaitPromise": True})
        if "exceptionDetails" in res:
            raise RuntimeError(f"evaluate failed: {res['exceptionDetails']}")
        return res["result"].get("value")

    def wait_for(self, expression, timeout=30, interval=0.2):
        """Poll a JS expression until it is truthy; return its value (or None)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(interval)
        return None

    def navigate(self, url, timeout=30):
        self.call("Page.navigate", {"url": url})
        self.wait_for("document.readyState === 'complete'", timeout=timeout)

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def close(self):
        self.ws.close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(directory):
    handler = functools.partial(QuietHandler, directory=directory)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def chromium(binary):
    profile = tempfile.mkdtemp(prefix="asv-dash-chromium-")
    proc = subprocess.Popen([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        port_file = os.path.join(profile, "DevToolsActivePort")
        deadline = time.monotonic() + 60
        while not os.path.exists(port_file) or not open(port_file).read().strip():
            if proc.poll() is not None:
                raise RuntimeError(f"chromium exited early: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError("chromium did not open its DevTools port")
            time.sleep(0.1)
        port = int(open(port_file).read().split()[0])
        for _ in range(100):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                pages = [t for t in json.load(r) if t.get("type") == "page"]
            if pages:
                break
            time.sleep(0.1)
        tools = DevTools(pages[0]["webSocketDebuggerUrl"])
        try:
            yield tools
        finally:
            tools.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


# How many pixels of the main graph's canvas differ from its top-left pixel:
# a graph with lines drawn has many, an empty canvas none.
GRAPH_STATE_JS = r"""
(() => {
  const div = document.getElementById('main-graph');
  if (!div || !window.jQuery) return null;
  const plot = jQuery(div).data('plot');
  const canvas = div.querySelector('canvas.flot-base');
  if (!plot || !canvas || canvas.width === 0) return null;
  const points = plot.getData().map(s => s.data.filter(p => p[1] !== null).length);
  const ctx = canvas.getContext('2d');
  const img = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  let inked = 0;
  for (let i = 0; i < img.length; i += 4) {
    if (img[i + 3] > 0 && (img[i] < 200 || img[i + 1] < 200 || img[i + 2] < 200)) inked++;
  }
  return {series_points: points, inked_pixels: inked,
          width: canvas.width, height: canvas.height};
})()
"""

LIST_STATE_JS = r"""
(() => {
  const rows = document.querySelectorAll('#summarylist-body table tbody tr');
  if (!rows.length) return null;
  return Array.from(rows).map(r => r.textContent.replace(/\s+/g, ' ').trim());
})()
"""


def check_dashboard(html_dir, graph, screenshot=None, binary=None, timeout=60):
    """Open the dashboard and return what was seen (dict)."""
    binary = binary or find_chromium()
    if not binary:
        raise FileNotFoundError(INSTALL_HINT)
    seen = {"errors": [], "requests": [], "location": None, "list_rows": None, "graph": None}
    with serve(os.path.abspath(html_dir)) as base, chromium(binary) as page:
        page.call("Runtime.enable")
        page.call("Log.enable")
        page.call("Network.enable")
        page.call("Page.enable")
        page.navigate(base + "index.html#summarylist", timeout=timeout)
        seen["list_rows"] = page.wait_for(LIST_STATE_JS, timeout=timeout)
        page.navigate(base + "index.html#" + graph, timeout=timeout)
        seen["graph"] = page.wait_for(GRAPH_STATE_JS, timeout=timeout)
        seen["title"] = page.evaluate("document.title")
        seen["location"] = page.evaluate("window.location.href")
        seen["body_text"] = page.evaluate("document.body.innerText.slice(0, 2000)")
        if screenshot:
            os.makedirs(os.path.dirname(os.path.abspath(screenshot)), exist_ok=True)
            page.screenshot(screenshot)
            seen["screenshot"] = screenshot
        page.evaluate("1")  # drain pending events
        for ev in page.events:
            m, p = ev["method"], ev.get("params", {})
            if m == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                text = d.get("exception", {}).get("description") or d.get("text")
                seen["errors"].append(f"exception: {text} ({d.get('url')}:{d.get('lineNumber')})")
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                args = " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"])
                seen["errors"].append(f"console.{p['type']}: {args}")
            elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
                e = p["entry"]
                seen["errors"].append(f"log {e.get('source')}: {e.get('text')} {e.get('url', '')}")
            elif m == "Network.requestWillBeSent":
                seen["requests"].append(p["request"]["url"])
            elif m == "Network.loadingFailed":
                seen["errors"].append(f"request failed: {p.get('errorText')} "
                                      f"{p.get('blockedReason', '')}")
        seen["base"] = base
    return seen


def problems(seen, expect_benchmarks=()):
    """The list of things wrong with what check_dashboard saw."""
    out = list(seen["errors"])
    base = seen.get("base", "http://127.0.0.1")
    foreign = [u for u in seen["requests"] if not u.startswith(base) and not u.startswith("data:")]
    out += [f"request to another host: {u}" for u in foreign]
    if "error.html" in (seen.get("location") or ""):
        out.append("the dashboard redirected to error.html (a library failed to load)")
    rows = seen.get("list_rows") or []
    if not rows:
        out.append("the benchmark list is empty")
    for name in expect_benchmarks:
        if not any(name in r for r in rows):
            out.append(f"benchmark {name} missing from the list")
    graph = seen.get("graph")
    if not graph:
        out.append("the graph page drew no plot")
    else:
        if not any(graph["series_points"]):
            out.append(f"the graph has no data points: {graph}")
        if graph["inked_pixels"] < 200:
            out.append(f"the graph canvas is nearly blank: {graph}")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--html", default=".asv/html")
    ap.add_argument("--graph", required=True, help="benchmark name whose graph is opened")
    ap.add_argument("--expect", action="append", default=[], help="benchmark name the list must show")
    ap.add_argument("--screenshot", default=".asv/dashboard.png")
    args = ap.parse_args(argv)
    if not find_chromium():
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    seen = check_dashboard(args.html, args.graph, args.screenshot)
    bad = problems(seen, args.expect)
    print(json.dumps({k: v for k, v in seen.items() if k != "body_text"}, indent=1))
    for b in bad:
        print("PROBLEM:", b, file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
