"""The controller's token file: who a token is, and errors that never show a token."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.controller.users import User, Users, may_see

ALICE = "4d9f0c1e7a2b46f3a8e5d2c6b1f07e93"
OPS = "b7e21f4c9d0a4e6b8c3f5a1d2e7f9c04"


def _users(tmp_path: Path, text: str) -> Users:
    path = tmp_path / "tokens.yaml"
    path.write_text(text)
    return Users.from_file(path)


def test_a_file_maps_tokens_to_users(tmp_path: Path) -> None:
    users = _users(tmp_path, f"{ALICE}: alice\n'{OPS}': {{user: ops, admin: true}}\n")
    assert len(users) == 2
    assert users.authenticate(ALICE) == User("alice")
    assert users.authenticate(OPS) == User("ops", admin=True)
    assert users.authenticate(ALICE[:-1]) is None
    assert users.authenticate("") is None


@pytest.mark.parametrize(
    ("metadata", "user"),
    [
        ([("authorization", f"Bearer {ALICE}")], "alice"),
        ([("x-other", "1"), ("authorization", f"bearer {ALICE}")], "alice"),
        ([("authorization", ALICE)], None),
        ([("authorization", f"Basic {ALICE}")], None),
        ([], None),
        (None, None),
    ],
)
def test_the_bearer_token_of_a_calls_metadata(
    metadata: list[tuple[str, str]] | None, user: str | None
) -> None:
    users = Users([(ALICE, User("alice"))])
    found = users.from_metadata(metadata)
    assert (found.name if found else None) == user


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[a, b]", "must map each token to a user"),
        (f"{ALICE}: ''", "entry 1: user must be a name"),
        (f"{ALICE}: 'al ice'", "entry 1: user must be a name"),
        (f"{ALICE}: {{user: alice, admin: yes-please}}", "entry 1: admin must be true or false"),
        (f"{ALICE}: {{user: alice, role: admin}}", r"entry 1: unknown keys \['role'\]"),
        (f"{ALICE}: alice\n{OPS}: [ops]", "entry 2: give a user name"),
        ("short-token: alice", "token of user 'alice': must be at least 16 characters"),
        (f"{ALICE}: alice\n'{ALICE} ': bob", "token of user 'bob': must be at least 16"),
        ("{}", "no tokens"),
        (f"{ALICE}: [unclosed", "not YAML at line 1"),
    ],
)
def test_errors_name_the_entry_and_never_the_token(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        _users(tmp_path, text)
    assert ALICE not in str(caught.value)
    assert OPS not in str(caught.value)
    assert "short-token" not in str(caught.value)


def test_a_token_given_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="token of user 'bob': given twice"):
        Users([(ALICE, User("alice")), (ALICE, User("bob"))])


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"missing\.yaml: cannot read"):
        Users.from_file(tmp_path / "missing.yaml")


def test_who_may_see_a_search() -> None:
    assert may_see(None, "alice")  # no auth: everyone sees everything
    assert may_see(User("alice"), "alice")
    assert not may_see(User("bob"), "alice")
    assert not may_see(User("bob"), "")  # searches from before auth was on: admins only
    assert may_see(User("ops", admin=True), "alice")
