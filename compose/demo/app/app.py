"""The shop: a small web service that greets its customers.

At start it reads settings.json beside it; it then serves the greeting on the port
the settings name, and /healthz for the image's health check.
"""

import json
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SETTINGS_FILE = Path(__file__).with_name("settings.json")


class Shop(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        text = "ok" if self.path == "/healthz" else settings["greeting"]
        body = f"{text}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Requests are not logged: the health check alone would fill the log."""


# As PID 1 in its container the process gets no default SIGTERM handling: stop at once.
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print(f"shop: reading settings from {SETTINGS_FILE}", flush=True)
settings = json.loads(SETTINGS_FILE.read_text())
port = int(settings["port"])
print(f"shop: serving on port {port}", flush=True)
ThreadingHTTPServer(("0.0.0.0", port), Shop).serve_forever()
