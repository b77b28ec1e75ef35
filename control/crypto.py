"""Envelopes for secrets at rest (heartbeat tokens, later channel secrets), and the keyring.

How this works
--------------
A secret is sealed with AES-256-GCM under the keyring's current key. The associated data
binds what the secret belongs to (its purpose, organisation and object id), so a
ciphertext copied to another row, another organisation or another kind of secret fails to
open. The envelope is compact JSON that names its format version and key id::

    {"v":2,"kid":"default","n":"<nonce, base64url>","c":"<ciphertext+tag, base64url>"}

Opening fails closed: a malformed envelope, another version, an unknown key id, or any
flipped byte raises EnvelopeError, whose message never contains key material or the
secret.

Keyring: ``LASTSEEN_KEYRING`` (JSON), else ``<data-dir>/keyring.json``, created on first
use with mode 0600. Its document::

    {"current": "default", "keys": {"default": "<32 bytes, base64>"}, "pat_key": "<...>"}

``pat_key`` keys the hashes of personal access tokens; it is not rotated with the
envelope keys, since a hash cannot be re-wrapped. ``LASTSEEN_KEYRING`` may also be a bare
map of key id to key: the last one is then current and the PAT key is derived from the
first with HKDF.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

log = logging.getLogger(__name__)

VERSION = 2
KEY_BYTES = 32
RELOAD_CHECK_SECONDS = 5.0  # how often a running process looks whether its keyring changed
NONCE_BYTES = 12
DEFAULT_KID = "default"


# What each kind of envelope seals (bound into its associated data: an envelope of one
# purpose never opens as another).
TOKEN_PURPOSE = "heartbeat-token"  # a monitor's heartbeat token
CHANNEL_PURPOSE = "channel-secret"  # a channel's secret configuration
SESSION_PURPOSE = "dashboard-session"  # a dashboard session cookie


class EnvelopeError(Exception):
    """An envelope could not be opened: malformed, unknown key, or tampered with."""


class KeyringError(Exception):
    """The keyring is missing, malformed or unsafe."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Keyring:
    current: str
    keys: Mapping[str, bytes]
    pat_key: bytes
    # Where a running process gets its keyring anew (LiveKeyring): an envelope under a key
    # id this one lacks (rotated meanwhile) is opened with what that returns.
    refresh: Callable[[], Keyring] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.current not in self.keys:
            raise KeyringError("the current key id is not in the keyring")
        for kid, key in self.keys.items():
            if len(key) != KEY_BYTES:
                raise KeyringError(f"key {kid!r} is not {KEY_BYTES} bytes")
        if len(self.pat_key) != KEY_BYTES:
            raise KeyringError(f"pat_key is not {KEY_BYTES} bytes")

    def __repr__(self) -> str:  # never print keys
        return f"Keyring(current={self.current!r}, kids={sorted(self.keys)!r})"

    @classmethod
    def generate(cls, kid: str = DEFAULT_KID) -> Keyring:
        return cls(kid, {kid: secrets.token_bytes(KEY_BYTES)}, secrets.token_bytes(KEY_BYTES))

    @classmethod
    def from_json(cls, text: str) -> Keyring:
        try:
            doc = json.loads(text)
            if isinstance(doc, dict) and "keys" in doc:
                keys = {str(k): _unb64(v) for k, v in doc["keys"].items()}
                return cls(str(doc["current"]), keys, _unb64(doc["pat_key"]))
            if isinstance(doc, dict) and doc:
                keys = {str(k): _unb64(v) for k, v in doc.items()}
                first = next(iter(keys.values()))
                pat_key = HKDF(
                    algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=b"lastseen pat"
                ).derive(first)
                return cls(list(keys)[-1], keys, pat_key)
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
            raise KeyringError(f"malformed keyring ({type(exc).__name__})") from None
        raise KeyringError("malformed keyring: expected a JSON object")

    def to_json(self) -> str:
        return json.dumps(
            {
                "current": self.current,
                "keys": {kid: _b64(key) for kid, key in self.keys.items()},
                "pat_key": _b64(self.pat_key),
            },
            indent=2,
        )

    def with_new_key(self, kid: str) -> Keyring:
        """A keyring with one more key, made current (for `lastseen keys rotate`)."""
        if kid in self.keys:
            raise KeyringError(f"key id {kid!r} already exists")
        return Keyring(kid, {**self.keys, kid: secrets.token_bytes(KEY_BYTES)}, self.pat_key)


def load_keyring(keyring_json: str | None, data_dir: Path, *, create: bool = True) -> Keyring:
    """`keyring_json` (LASTSEEN_KEYRING) if set, else <data_dir>/keyring.json (created, mode
    0600, if missing and `create`; else KeyringError naming where it was looked for)."""
    if keyring_json:
        return Keyring.from_json(keyring_json)
    path = data_dir / "keyring.json"
    if not path.exists() and not create:
        raise KeyringError(
            f"no keyring at {path.resolve()}: set LASTSEEN_KEYRING, or LASTSEEN_DATA_DIR (or"
            " --data-dir) to the directory whose keyring.json sealed this database's secrets"
            " (a new keyring would make every token and secret in it unreadable)"
        )
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        keyring = Keyring.generate()
        write_keyring(path, keyring)
        return keyring
    if path.stat().st_mode & 0o077:
        raise KeyringError(f"{path} is readable by others: chmod 600 it")
    return Keyring.from_json(path.read_text())


class LiveKeyring:
    """A running process's keyring, as its file says now: read again when the file
    changed (looked at no more often than every RELOAD_CHECK_SECONDS), on ``reload()``
    (SIGHUP), and at once when an envelope names a key id it lacks. So `lastseen keys
    rotate` and `keys retire` take effect without a restart. From LASTSEEN_KEYRING (no
    file) it never changes. A file that cannot be read or parsed keeps the keyring the
    process has, and says so in the log."""

    def __init__(
        self, keyring: Keyring, path: Path | None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.path = path
        self._clock = clock
        self._keyring = replace(keyring, refresh=self._now)
        self._stamp = self._stat()
        self._next_check = clock() + RELOAD_CHECK_SECONDS
        self.reloads = 0

    def get(self) -> Keyring:
        """The keyring to use now."""
        if self.path is not None and self._clock() >= self._next_check:
            self._next_check = self._clock() + RELOAD_CHECK_SECONDS
            if self._stat() != self._stamp:
                self.reload()
        return self._keyring

    def reload(self) -> bool:
        """Read the file again (SIGHUP, or it changed); True if the keyring changed."""
        if self.path is None:
            return False
        stamp = self._stat()
        try:
            keyring = Keyring.from_json(self.path.read_text())
        except (OSError, KeyringError) as exc:
            log.warning("keyring %s not reloaded (%s): keeping the one in use", self.path, exc)
            return False
        self._stamp = stamp
        if keyring == self._keyring:
            return False
        self._keyring = replace(keyring, refresh=self._now)
        self.reloads += 1
        log.info("keyring reloaded: current key %r, keys %s", keyring.current, sorted(keyring.keys))
        return True

    def _now(self) -> Keyring:
        """An envelope named a key id we lack: look at the file now, not in 5 s."""
        self.reload()
        return self._keyring

    def _stat(self) -> tuple[int, int] | None:
        if self.path is None:
            return None
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size


def live_keyring(keyring: Keyring | LiveKeyring, path: Path | None = None) -> LiveKeyring:
    return keyring if isinstance(keyring, LiveKeyring) else LiveKeyring(keyring, path)


def write_keyring(path: Path, keyring: Keyring) -> None:
    """Write atomically with mode 0600 (never briefly readable by others)."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(keyring.to_json())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def associated_data(purpose: str, org_id: int, object_id: int) -> bytes:
    return f"lastseen/{purpose}/v{VERSION}/org={org_id}/id={object_id}".encode()


def seal(keyring: Keyring, plaintext: bytes, *, purpose: str, org_id: int, object_id: int) -> str:
    nonce = secrets.token_bytes(NONCE_BYTES)
    aad = associated_data(purpose, org_id, object_id)
    ciphertext = AESGCM(keyring.keys[keyring.current]).encrypt(nonce, plaintext, aad)
    # Key order matters to readers of the docs: {"v":2,"kid":"default",...}
    return json.dumps(
        {"v": VERSION, "kid": keyring.current, "n": _b64(nonce), "c": _b64(ciphertext)},
        separators=(",", ":"),
    )


def envelope_kid(envelope: str) -> str:
    """The key id an envelope names (raises EnvelopeError if it is not an envelope)."""
    return _parse(envelope)[0]


def _parse(envelope: str) -> tuple[str, bytes, bytes]:
    try:
        doc = json.loads(envelope)
        if not isinstance(doc, dict) or doc.get("v") != VERSION:
            raise EnvelopeError("unsupported envelope version")
        kid, nonce, ciphertext = doc["kid"], _unb64(doc["n"]), _unb64(doc["c"])
    except EnvelopeError:
        raise
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise EnvelopeError("malformed envelope") from None
    if not isinstance(kid, str) or len(nonce) != NONCE_BYTES:
        raise EnvelopeError("malformed envelope")
    return kid, nonce, ciphertext


def open_envelope(
    keyring: Keyring, envelope: str, *, purpose: str, org_id: int, object_id: int
) -> bytes:
    kid, nonce, ciphertext = _parse(envelope)
    key = keyring.keys.get(kid)
    if key is None and keyring.refresh is not None:
        key = keyring.refresh().keys.get(kid)  # `lastseen keys rotate` ran meanwhile
    if key is None:
        raise EnvelopeError("envelope sealed with an unknown key id")
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, associated_data(purpose, org_id, object_id))
    except InvalidTag:
        raise EnvelopeError("envelope does not open: wrong row, wrong key, or altered") from None
