"""Which browser a session belongs to: a random id the server signs, kept in a cookie.

A reload or reconnect is a new Streamlit session but the same browser: the job manager's quota,
its watchers and the uploads a browser owns follow this id, not the session. The cookie holds
``<id>.<HMAC-SHA256 of the id>``; the key is ``GRADIENT_LAB_SECRET`` or, without it, a random key
kept owner-only in the cache (``browser.key``), so cookies stay valid across restarts. A client
cannot choose its id, but one that drops cookies gets a new id per session (see README).
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
from pathlib import Path

from core.engine import paths

SECRET_ENV = "GRADIENT_LAB_SECRET"
KEY_FILE = "browser.key"
ID_CHARS = 32  # hex digits of a browser id
MAC_CHARS = 32  # hex digits of its signature

_lock = threading.Lock()
_keys: dict[Path, bytes] = {}


def _key() -> bytes:
    configured = os.environ.get(SECRET_ENV, "").strip()
    if configured:
        return configured.encode()
    path = paths.private_dir() / KEY_FILE
    with _lock:
        if path not in _keys:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as out:
                    out.write(secrets.token_bytes(32))
            except FileExistsError:
                pass
            _keys[path] = path.read_bytes()
        return _keys[path]


def new_id() -> str:
    """A fresh browser id (random, unguessable)."""
    return secrets.token_hex(ID_CHARS // 2)


def _mac(browser: str) -> str:
    return hmac.new(_key(), browser.encode(), hashlib.sha256).hexdigest()[:MAC_CHARS]


def sign(browser: str) -> str:
    """The cookie value for ``browser``."""
    return f"{browser}.{_mac(browser)}"


def verify(cookie: str | None) -> str | None:
    """The browser id a cookie value carries, or None when it is missing, malformed or not signed here."""
    if not cookie or len(cookie) != ID_CHARS + 1 + MAC_CHARS:
        return None
    browser, _, mac = cookie.partition(".")
    if len(browser) != ID_CHARS or not all(c in "0123456789abcdef" for c in browser):
        return None
    return browser if hmac.compare_digest(mac, _mac(browser)) else None
