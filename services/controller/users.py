"""Who may search: bearer tokens, the users they stand for, and what a user may see.

The controller's ``--auth-tokens FILE`` is YAML mapping each token to its user::

    # token: user name, or a mapping with the name and admin: true
    4d9f0c1e7a2b46f3a8e5d2c6b1f07e93: alice
    b7e21f4c9d0a4e6b8c3f5a1d2e7f9c04: {user: ops, admin: true}

A search belongs to the user who submitted it. A user sees and cancels only their own
searches; an admin sees all. Tokens are kept only as SHA-256 digests, compared in constant
time, and never shown: an error about an entry names its position in the file.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

__all__ = ["MIN_TOKEN_LENGTH", "User", "Users", "may_see"]

MIN_TOKEN_LENGTH = 16
_USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")
_BEARER = "bearer "


@dataclass(frozen=True)
class User:
    name: str
    admin: bool = False


def may_see(user: User | None, owner: str) -> bool:
    """Whether ``user`` may see a search owned by ``owner`` (None: auth is off, all may)."""
    return user is None or user.admin or user.name == owner


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Users:
    """The users of a token file, found by token in time that does not depend on it."""

    def __init__(self, entries: Iterable[tuple[str, User]]) -> None:
        self._entries: list[tuple[bytes, User]] = []
        for token, user in entries:
            if len(token) < MIN_TOKEN_LENGTH or any(c.isspace() for c in token):
                raise ValueError(
                    f"token of user {user.name!r}: must be at least {MIN_TOKEN_LENGTH} "
                    "characters without whitespace"
                )
            digest = _digest(token)
            if any(hmac.compare_digest(digest, d) for d, _ in self._entries):
                raise ValueError(f"token of user {user.name!r}: given twice")
            self._entries.append((digest, user))
        if not self._entries:
            raise ValueError("no tokens: give at least one")

    @classmethod
    def from_file(cls, path: str | Path) -> Users:
        """Read a token file; ``ValueError`` names the entry (by position) that is wrong."""
        try:
            data = yaml.safe_load(Path(path).read_text())
        except OSError as err:
            raise ValueError(f"{path}: cannot read: {err.strerror or err}") from None
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise ValueError(f"{path}: not YAML{where}") from None
        try:
            return cls.from_document(data)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None

    @classmethod
    def from_document(cls, data: object) -> Users:
        """The users of a token file's parsed YAML; ``ValueError`` names the entry."""
        return cls(_entries(data))

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, token: str) -> User | None:
        """The user of ``token``, or None. Every entry is compared, found or not."""
        digest = _digest(token)
        found = None
        for known, user in self._entries:
            if hmac.compare_digest(digest, known):
                found = user
        return found

    def from_metadata(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> User | None:
        """The user of a call's ``authorization: Bearer TOKEN`` metadata, or None."""
        for key, value in metadata or ():
            if key != "authorization" or not isinstance(value, str):
                continue
            if value[: len(_BEARER)].lower() == _BEARER:
                return self.authenticate(value[len(_BEARER) :].strip())
        return None


def _entries(data: object) -> list[tuple[str, User]]:
    if not isinstance(data, Mapping):
        raise ValueError("must map each token to a user (token: name)")
    entries = []
    for position, (token, value) in enumerate(data.items(), start=1):
        where = f"entry {position}"
        name: object
        if not isinstance(token, str):
            raise ValueError(f"{where}: the token must be a string (quote it)")
        if isinstance(value, str):
            name, admin = value, False
        elif isinstance(value, Mapping):
            unknown = sorted(set(map(str, value)) - {"user", "admin"})
            if unknown:
                raise ValueError(f"{where}: unknown keys {unknown}; known: user, admin")
            name, admin = value.get("user"), value.get("admin", False)
            if not isinstance(admin, bool):
                raise ValueError(f"{where}: admin must be true or false")
        else:
            raise ValueError(f"{where}: give a user name or {{user: NAME, admin: true}}")
        if not isinstance(name, str) or not _USER_NAME.match(name):
            raise ValueError(
                f"{where}: user must be a name of letters, digits and . _ @ - (got {name!r})"
            )
        entries.append((token, User(name, admin)))
    return entries
