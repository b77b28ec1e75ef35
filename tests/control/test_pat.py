"""Personal access tokens: shape and checksum first, keyed hash at rest."""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import given

from control import pat


def test_a_new_token_is_well_formed_and_unique():
    tokens = {pat.new_token() for _ in range(200)}
    assert len(tokens) == 200
    for token in tokens:
        assert token.startswith("obs_") and len(token) == pat.LENGTH
        assert pat.well_formed(token)


@given(st.data())
def test_any_single_character_change_is_refused_without_a_database(data):
    token = pat.new_token()
    i = data.draw(st.integers(0, len(token) - 1))
    # Draws that do not depend on the (random) token, so hypothesis can replay them.
    alphabet = pat._ALPHABET + "_-"
    shift = data.draw(st.integers(1, len(alphabet) - 1))
    c = alphabet[(alphabet.index(token[i]) + shift) % len(alphabet)]
    assert c != token[i]
    assert not pat.well_formed(token[:i] + c + token[i + 1 :])


def test_truncated_or_foreign_tokens_are_refused():
    token = pat.new_token()
    for bad in [token[:-1], token + "0", "ghp_" + token[4:], "", "obs_", token.upper()]:
        assert not pat.well_formed(bad)


def test_the_hash_depends_on_the_key():
    token = pat.new_token()
    a = pat.token_hash(b"a" * 32, token)
    assert a == pat.token_hash(b"a" * 32, token)
    assert a != pat.token_hash(b"b" * 32, token)
    assert token.encode() not in a and len(a) == 32
