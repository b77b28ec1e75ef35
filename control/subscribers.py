"""Status-page subscribers: signed links, and the mails they receive.

A confirmation or unsubscribe link carries the subscriber's id and an HMAC over (purpose,
id, address) under a key derived from the keyring, so a link cannot be forged, moved to
another subscriber, or reused after the address unsubscribed (the row is gone).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from email.message import EmailMessage
from typing import Any
from urllib.parse import quote

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from notifier import email
from notifier.base import Notice, Transport

from .crypto import Keyring

CONFIRM = "confirm"
UNSUBSCRIBE = "unsubscribe"


def link_key(keyring: Keyring) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"lastseen subscriber links"
    ).derive(keyring.pat_key)


def sign(keyring: Keyring, purpose: str, subscriber_id: int, address: str) -> str:
    message = f"{purpose}|{subscriber_id}|{address.lower()}".encode()
    return hmac.new(link_key(keyring), message, hashlib.sha256).hexdigest()[:40]


def verify(keyring: Keyring, purpose: str, subscriber_id: int, address: str, token: str) -> bool:
    expected = sign(keyring, purpose, subscriber_id, address).encode()
    return hmac.compare_digest(expected, token.encode("utf-8", "replace"))


def link(
    base: str, keyring: Keyring, purpose: str, slug: str, subscriber_id: int, address: str
) -> str:
    token = sign(keyring, purpose, subscriber_id, address)
    return f"{base.rstrip('/')}/status/{quote(slug)}/{purpose}?s={subscriber_id}&t={token}"


async def send_confirmation(
    transport: Transport, keyring: Keyring, row: Mapping[str, Any], notice: Notice
) -> None:
    """The one mail an unconfirmed address gets: the link that confirms it (and, as in
    every mail, one that removes the address)."""
    base = transport.settings.public_url
    confirm = link(base, keyring, CONFIRM, row["page_slug"], row["subscriber_id"], row["address"])
    leave = link(base, keyring, UNSUBSCRIBE, row["page_slug"], row["subscriber_id"], row["address"])

    def make() -> EmailMessage:
        mail = email.plain_message(
            sender=transport.settings.smtp_from,
            to=row["address"],
            subject=f"[lastseen] Confirm your subscription to {row['page_title']}",
            text=(
                f"Someone (hopefully you) asked to hear about incidents on the status page "
                f"“{row['page_title']}”.\n\nConfirm: {confirm}\n\n"
                "If it was not you, ignore this mail: nothing else will be sent.\n"
                f"Unsubscribe: {leave}"
            ),
            message_key=notice.idempotency_key,
        )
        mail["List-Unsubscribe"] = f"<{leave}>"
        mail["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        return mail

    mail = email.build(make)
    await email.send_message(mail, transport)


async def send_incident(
    transport: Transport, keyring: Keyring, row: Mapping[str, Any], notice: Notice
) -> None:
    """An incident opened or resolved, to a confirmed subscriber, with one-click unsubscribe."""
    base = transport.settings.public_url
    leave = link(base, keyring, UNSUBSCRIBE, row["page_slug"], row["subscriber_id"], row["address"])
    page = f"{base.rstrip('/')}/status/{quote(row['page_slug'])}"

    def make() -> EmailMessage:
        mail = email.message(
            notice, transport.settings.smtp_from, row["address"],
            extra_text=f"\nStatus page: {page}\nUnsubscribe: {leave}\n",
        )  # fmt: skip
        mail["List-Unsubscribe"] = f"<{leave}>"
        mail["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        return mail

    mail = email.build(make)
    await email.send_message(mail, transport)
