"""A request needs both the role and the token; a token never mints more than it has."""

from __future__ import annotations

import pytest

from control.access import ROLES, SCOPES, allows, can_mint


@pytest.mark.parametrize("role", ROLES)
def test_secrets_and_audit_are_for_owners_and_admins_only(role):
    for scope in ("secrets:read", "audit:read"):
        assert allows(role, ["*"], scope) == (role in ("owner", "admin"))


def test_a_token_narrows_its_users_role():
    assert allows("admin", ["monitors:read"], "monitors:read")
    assert not allows("admin", ["monitors:read"], "monitors:write")
    assert not allows("viewer", ["monitors:write"], "monitors:write")  # the role says no


@pytest.mark.parametrize("role", ROLES)
def test_no_token_mints_more_than_it_has(role):
    assert can_mint(role, ["*"], ["*"])
    assert not can_mint(role, ["monitors:read"], ["*"])
    for scope in SCOPES:
        assert can_mint(role, ["*"], [scope]) == allows(role, ["*"], scope)
        assert not can_mint(role, [], [scope])
