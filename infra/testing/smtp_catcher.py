"""An SMTP catcher for tests (PyPI `aiosmtpd`): keeps every message it accepts as a JSON file.

    python smtp_catcher.py PORT_FILE MAIL_DIR

Listens on 127.0.0.1 (a free port, written to PORT_FILE). Recipients whose address starts with
`bounce` are refused for good (550); those starting with `later` are refused for now (451) the
first time and accepted after. Each accepted message is MAIL_DIR/<n>.json:
{"from", "to": [...], "data": the raw message}.
"""

import json
import os
import socket
import sys
import threading
import time

from aiosmtpd.controller import Controller


class Catcher:
    def __init__(self, folder):
        self.folder = folder
        self.deferred = set()
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("bounce"):
            return "550 5.1.1 mailbox unavailable"
        if address.startswith("later"):
            with self.lock:
                first = address not in self.deferred
                self.deferred.add(address)
            if first:
                return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        name = os.path.join(self.folder, f"{time.time_ns()}.json")
        with open(name + ".tmp", "w") as f:
            json.dump({"from": envelope.mail_from, "to": envelope.rcpt_tos,
                       "data": envelope.content.decode("utf8", "replace")}, f)
        os.rename(name + ".tmp", name)
        return "250 Message accepted"


probe = socket.socket()
probe.bind(("127.0.0.1", 0))
port = probe.getsockname()[1]
probe.close()
controller = Controller(Catcher(sys.argv[2]), hostname="127.0.0.1", port=port)
controller.start()
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(port))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
threading.Event().wait()
