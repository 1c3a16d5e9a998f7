"""A webhook receiver for tests: verifies every request with the reference Standard Webhooks
library (PyPI `standardwebhooks`, which nobody here wrote) and records what it got.

    python webhook_receiver.py PORT_FILE LOG_FILE

Listens on 127.0.0.1 (a free port, written to PORT_FILE). Paths are `/<name>`; a test configures
a path with `POST /_config/<name>` and a JSON body:
    {"secrets": ["whsec_…", …], "fail": N, "status": 500, "gone": false,
     "redirect": "http://10.0.0.1/", "retryAfter": 30}
The first `fail` requests to the path answer `status` (with `Retry-After` when set); then 200
(or 410 when `gone`, or a 302 to `redirect`). Each request appends one JSON line to LOG_FILE:
{path, id, timestamp, verified: [bool per secret], status, body}.
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook

config = {}
counts = {}
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        if self.path.startswith("/_config/"):
            with lock:
                config[self.path[len("/_config/"):]] = json.loads(body)
            self.send_response(204)
            self.end_headers()
            return
        name = self.path.lstrip("/")
        with lock:
            conf = config.get(name, {})
            counts[name] = counts.get(name, 0) + 1
            n = counts[name]
        headers = {k.lower(): v for k, v in self.headers.items()}
        verified = []
        for secret in conf.get("secrets", []):
            try:
                Webhook(secret).verify(body.decode(), headers)
                verified.append(True)
            except Exception:
                verified.append(False)
        extra = {}
        if n <= conf.get("fail", 0):
            status = conf.get("status", 500)
            if conf.get("retryAfter") is not None:
                extra["Retry-After"] = str(conf["retryAfter"])
        elif conf.get("gone"):
            status = 410
        elif conf.get("redirect"):
            status = 302
            extra["Location"] = conf["redirect"]
        else:
            status = 200
        with lock, open(sys.argv[2], "a") as log:
            log.write(json.dumps({
                "path": name, "id": headers.get("webhook-id"), "timestamp": headers.get("webhook-timestamp"),
                "signature": headers.get("webhook-signature"), "verified": verified, "status": status,
                "body": body.decode(),
            }) + "\n")
        answer = json.dumps({"received": n}).encode()
        self.send_response(status)
        for k, v in extra.items():
            self.send_header(k, v)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
import os  # noqa: E402
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
server.serve_forever()
