"""Who may steer jobs from a browser, and what every response tells the browser.

- Reading is open (like /metrics): the daemon binds 127.0.0.1 by default. Actions are POSTs
  that need `ui_token` configured *and* `Authorization: Bearer <token>`, compared in constant
  time (`hmac.compare_digest`). No token configured: every action answers 403 saying how to
  enable them. Cookies are never used, so a cross-site page cannot ride on a session.
- Cross-site requests are refused before the token is looked at: a browser marks them with
  `Sec-Fetch-Site: cross-site|same-site` or an `Origin` that is not this server's. A custom
  `Authorization` header also forces a CORS preflight, which this server never grants.
- Every response carries `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY`,
  `Referrer-Policy: no-referrer` and a Content-Security-Policy allowing only this origin, and,
  for scripts and styles, the page's own inline blocks by a per-response nonce: markup that an
  error message might smuggle past the escaping still could not run.

Pure functions of headers and settings; `app.py` turns their verdicts into responses.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass


def new_nonce() -> str:
    return secrets.token_urlsafe(18)


def security_headers(nonce: str | None) -> dict[str, str]:
    script = f"'nonce-{nonce}'" if nonce else "'none'"
    csp = ("default-src 'none'; "
           f"script-src {script}; style-src {script}; img-src 'self'; connect-src 'self'; "
           "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
    return {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    message: str


READ_ONLY = Refusal(403, "the dashboard is read-only: set ui_token in the config file or "
                         "BULKTAG_UI_TOKEN for the daemon to enable actions")
CROSS_SITE = Refusal(403, "cross-site request refused: actions are accepted only from the "
                          "dashboard's own pages")
NO_TOKEN = Refusal(401, "this action needs the dashboard token: send "
                        "'Authorization: Bearer <ui_token>'")
BAD_TOKEN = Refusal(401, "wrong dashboard token")


def _same_origin(headers: Mapping[str, str], scheme: str, host: str) -> bool:
    site = headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = headers.get("Origin")
    return origin is None or origin == f"{scheme}://{host}"


def check_action(headers: Mapping[str, str], *, scheme: str, host: str,
                 token: str | None) -> Refusal | None:
    """None when a POST action may proceed; else why not (403 read-only or cross-site, 401
    missing or wrong token). `host` is the request's Host header (host:port)."""
    if not token:
        return READ_ONLY
    if not _same_origin(headers, scheme, host):
        return CROSS_SITE
    auth = headers.get("Authorization", "")
    scheme_word, _, given = auth.partition(" ")
    if scheme_word.lower() != "bearer" or not given.strip():
        return NO_TOKEN
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        return BAD_TOKEN
    return None
