"""Envelopes fail closed: moved, flipped, or under an unknown key, they do not open."""

from __future__ import annotations

import json
import os
import stat

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from control.crypto import (
    EnvelopeError,
    Keyring,
    KeyringError,
    envelope_kid,
    load_keyring,
    open_envelope,
    seal,
)

KEYRING = Keyring.generate()
TOKEN = b"ab" * 32


def sealed(org: int = 1, monitor: int = 17) -> str:
    return seal(KEYRING, TOKEN, purpose="heartbeat-token", org_id=org, object_id=monitor)


def test_an_envelope_opens_for_its_own_row_and_reads_like_the_docs():
    envelope = sealed()
    assert envelope.startswith('{"v":2,"kid":"default",')
    assert TOKEN.decode() not in envelope
    opened = open_envelope(KEYRING, envelope, purpose="heartbeat-token", org_id=1, object_id=17)
    assert opened == TOKEN


@pytest.mark.parametrize(
    ("org", "monitor", "purpose"),
    [(1, 18, "heartbeat-token"), (2, 17, "heartbeat-token"), (1, 17, "channel-secret")],
    ids=["other-row", "other-org", "other-purpose"],
)
def test_an_envelope_moved_elsewhere_does_not_open(org, monitor, purpose):
    with pytest.raises(EnvelopeError, match="does not open"):
        open_envelope(KEYRING, sealed(), purpose=purpose, org_id=org, object_id=monitor)


@settings(max_examples=300)
@given(st.data())
def test_any_flipped_byte_fails_closed(data):
    envelope = sealed()
    i = data.draw(st.integers(0, len(envelope) - 1))
    replacement = data.draw(st.characters(codec="ascii").filter(lambda c: c != envelope[i]))
    tampered = envelope[:i] + replacement + envelope[i + 1 :]
    try:
        opened = open_envelope(KEYRING, tampered, purpose="heartbeat-token", org_id=1, object_id=17)
    except EnvelopeError:
        return
    # Only an equivalent spelling may still open (base64 padding bits), never other bytes.
    assert opened == TOKEN


def test_an_unknown_key_id_fails_closed():
    other = Keyring.generate("other")
    with pytest.raises(EnvelopeError, match="unknown key id"):
        open_envelope(other, sealed(), purpose="heartbeat-token", org_id=1, object_id=17)


def test_errors_never_carry_the_secret_or_the_key():
    doc = json.loads(sealed())
    doc["c"] = doc["c"][:-2] + "AA"
    with pytest.raises(EnvelopeError) as caught:
        open_envelope(KEYRING, json.dumps(doc), purpose="heartbeat-token", org_id=1, object_id=17)
    message = str(caught.value)
    assert TOKEN.decode() not in message
    assert KEYRING.to_json() not in message
    assert "pat_key" not in repr(KEYRING)


def test_a_rotated_keyring_opens_old_envelopes_and_seals_new_ones_with_the_new_key():
    old = sealed()
    rotated = KEYRING.with_new_key("k2")
    assert envelope_kid(seal(rotated, TOKEN, purpose="p", org_id=1, object_id=1)) == "k2"
    assert open_envelope(rotated, old, purpose="heartbeat-token", org_id=1, object_id=17) == TOKEN


def test_the_keyring_file_is_created_once_with_mode_600(tmp_path):
    first = load_keyring(None, tmp_path)
    path = tmp_path / "keyring.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_keyring(None, tmp_path).keys == first.keys
    os.chmod(path, 0o644)
    with pytest.raises(KeyringError, match="chmod 600"):
        load_keyring(None, tmp_path)


def test_the_environment_keyring_wins_and_may_be_a_bare_map():
    env = {"LASTSEEN_KEYRING": json.dumps({"a": "A" * 43, "b": "B" * 43})}
    keyring = load_keyring(env["LASTSEEN_KEYRING"], __import__("pathlib").Path("/nonexistent"))
    assert keyring.current == "b"
    assert len(keyring.pat_key) == 32
    with pytest.raises(KeyringError, match="malformed"):
        Keyring.from_json('{"a": "not base64!"}')


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_running_process_sees_a_rotated_keyring_without_a_restart(tmp_path):
    """LiveKeyring: the file is looked at every 5 s (its change picked up), at once when
    an envelope names a key it lacks, and on reload() (SIGHUP); a broken file keeps the
    keyring in use."""
    from control.crypto import LiveKeyring, write_keyring

    path = tmp_path / "keyring.json"
    first = Keyring.generate()
    write_keyring(path, first)
    clock = _Clock()
    live = LiveKeyring(load_keyring(None, tmp_path), path, clock)
    rotated = first.with_new_key("k2")
    write_keyring(path, rotated)  # `lastseen keys rotate`, in another process
    assert live.get().current == "default"  # not looked at yet
    # An envelope under the new key opens at once: the unknown key id makes it look.
    under_k2 = seal(rotated, TOKEN, purpose="p", org_id=1, object_id=1)
    assert open_envelope(live.get(), under_k2, purpose="p", org_id=1, object_id=1) == TOKEN
    assert live.get().current == "k2" and live.reloads == 1
    # A change is seen within the check interval, with no envelope to prompt it.
    write_keyring(path, rotated.with_new_key("k3"))
    clock.now += 4.9
    assert live.get().current == "k2"
    clock.now += 0.2
    assert live.get().current == "k3" and live.reloads == 2
    # SIGHUP: at once. A broken file keeps what works.
    path.write_text("{not json")
    assert not live.reload() and live.get().current == "k3"
    # From LASTSEEN_KEYRING (no file): fixed, and an unknown key id stays unknown.
    fixed = LiveKeyring(first, None)
    with pytest.raises(EnvelopeError, match="unknown key id"):
        open_envelope(fixed.get(), under_k2, purpose="p", org_id=1, object_id=1)
