"""schemathesis's authentication for the session pass of api/tests/api/openapi.rs.

A portal session, signed in through the OIDC provider's login form as a browser does, sent as the
session cookie with its X-CSRF-Token and the API's Origin. The run calls POST /auth/logout like
any other operation, which ends the session: the next answer is then 401, and schemathesis asks
for a new session (its `retry_on` 401) and sends that request again.

Environment: NIMBUS_ST_BASE (the API), NIMBUS_ST_EMAIL and NIMBUS_ST_PASSWORD (a provider user).
"""

import os
import re
from urllib.parse import urljoin

import requests
import schemathesis

BASE = os.environ["NIMBUS_ST_BASE"]
COOKIE = "__Host-nimbus_session"


def sign_in() -> dict:
    """Walks /auth/login → the provider's forms → /auth/callback; returns the cookie and token."""
    browser = requests.Session()
    answer = browser.get(f"{BASE}/auth/login", allow_redirects=False, timeout=10)
    url = answer.headers["location"]
    # The API's cookies are `__Host-` (Secure): carried by hand over plain HTTP, as a browser on
    # HTTPS would carry them.
    login_cookies = "; ".join(re.findall(r"(__Host-[\w-]+=[^;,]+)", answer.headers.get("set-cookie", "")))
    for _ in range(10):
        if url.startswith(BASE):
            break
        answer = browser.get(url, allow_redirects=False, timeout=10)
        if answer.is_redirect:
            url = urljoin(url, answer.headers["location"])
            continue
        action = re.search(r'action="([^"]+)"', answer.text).group(1)
        if 'name="login"' in answer.text:
            form = {"prompt": "login", "login": os.environ["NIMBUS_ST_EMAIL"], "password": os.environ["NIMBUS_ST_PASSWORD"]}
        else:
            form = {"prompt": "consent"}
        answer = browser.post(urljoin(url, action), data=form, allow_redirects=False, timeout=10)
        url = urljoin(url, answer.headers["location"])
    callback = browser.get(url, headers={"Cookie": login_cookies}, allow_redirects=False, timeout=10)
    found = re.search(COOKIE + r"=([^;]+)", callback.headers.get("set-cookie", ""))
    if callback.status_code != 303 or found is None:
        raise RuntimeError(f"sign-in failed: {callback.status_code} {callback.text[:200]}")
    cookie = found.group(1)
    me = requests.get(f"{BASE}/v1/me", headers={"Cookie": f"{COOKIE}={cookie}"}, timeout=10)
    me.raise_for_status()
    return {"cookie": cookie, "csrf": me.json()["data"]["csrfToken"]}


@schemathesis.auth()
class PortalSession:
    def get(self, case, context):
        return sign_in()

    def set(self, case, data, context):
        case.headers = case.headers or {}
        case.headers["Cookie"] = f"{COOKIE}={data['cookie']}"
        case.headers["X-CSRF-Token"] = data["csrf"]
        case.headers["Origin"] = BASE
