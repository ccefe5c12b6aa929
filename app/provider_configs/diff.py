"""What changed between two versions of a provider configuration: the one owner of diffs.

A diff compares two version snapshots field by field: `provider_name`, `priority`, `enabled`,
each key of `config_data` by its dotted path (a nested object is walked; any other value, a list
included, is compared whole), every registered secret of the snapshot, and `deleted`. Secrets are
compared by their stored ciphertexts and shown only as "changed", never with a value or a mask;
the service keeps a ciphertext untouched when the same secret is sent again, so an unchanged
secret never shows as changed (one set to a new value and then back to the old one does).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from app.core.secret_fields import SnapshotSecret, registered_snapshots
from app.provider_configs.models import ProviderConfigVersion

ChangeKind = Literal["added", "removed", "changed"]
# The plain fields of a snapshot, in the order a diff lists them (config_data and the secrets
# follow, then `deleted`).
_PLAIN_FIELDS = ("provider_name", "priority", "enabled")
_MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One changed field; a secret's carries no values (`before`/`after` are left out)."""

    field: str
    change: ChangeKind
    before: Any = _MISSING
    after: Any = _MISSING
    secret: bool = False

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"field": self.field, "change": self.change}
        if not self.secret:
            if self.before is not _MISSING:
                out["before"] = self.before
            if self.after is not _MISSING:
                out["after"] = self.after
        out["secret"] = self.secret
        return out


def _snapshot_secrets() -> tuple[SnapshotSecret, ...]:
    # Every secret registered as kept in a version snapshot, whichever module defined it.
    return tuple(
        s for s in registered_snapshots() if s.table == ProviderConfigVersion.__tablename__
    )


def _path_part(key: str) -> str:
    """A config_data key as one segment of a dotted path: a dot or backslash inside is escaped."""
    return key.replace("\\", "\\\\").replace(".", "\\.")


def _same(before: Any, after: Any) -> bool:
    # JSON equality, not Python's: 1, 1.0 and true are three different values in a document.
    if type(before) is not type(after):
        return False
    if isinstance(before, dict | list):
        return json.dumps(before, sort_keys=True) == json.dumps(after, sort_keys=True)
    return bool(before == after)


def _value_changes(path: str, before: Any, after: Any) -> Iterator[FieldChange]:
    if before is _MISSING and after is _MISSING:
        return
    if before is _MISSING:
        yield FieldChange(path, "added", after=after)
    elif after is _MISSING:
        yield FieldChange(path, "removed", before=before)
    elif isinstance(before, dict) and isinstance(after, dict):
        yield from _object_changes(path, before, after)
    elif not _same(before, after):
        yield FieldChange(path, "changed", before=before, after=after)


def _object_changes(
    path: str, before: Mapping[str, Any], after: Mapping[str, Any]
) -> Iterator[FieldChange]:
    # Depth is bounded where config_data is accepted (MAX_CONFIG_DATA_DEPTH).
    for key in sorted(set(before) | set(after)):
        yield from _value_changes(
            f"{path}.{_path_part(key)}", before.get(key, _MISSING), after.get(key, _MISSING)
        )


def diff_snapshots(
    before: Mapping[str, Any] | None, after: Mapping[str, Any] | None
) -> list[FieldChange]:
    """The changes from `before` to `after` (None: the configuration did not exist yet)."""
    old: Mapping[str, Any] = before or {}
    new: Mapping[str, Any] = after or {}
    changes: list[FieldChange] = []
    for name in _PLAIN_FIELDS:
        changes.extend(_value_changes(name, old.get(name, _MISSING), new.get(name, _MISSING)))
    old_data = old.get("config_data", _MISSING)
    new_data = new.get("config_data", _MISSING)
    # A configuration's first version lists each of its settings rather than one object.
    changes.extend(
        _value_changes(
            "config_data",
            {} if old_data is _MISSING and isinstance(new_data, dict) else old_data,
            {} if new_data is _MISSING and isinstance(old_data, dict) else new_data,
        )
    )
    for secret in _snapshot_secrets():
        if old.get(secret.key) != new.get(secret.key):
            changes.append(FieldChange(secret.field.name, "changed", secret=True))
    was_deleted = bool(old.get("deleted", False))
    is_deleted = bool(new.get("deleted", False))
    if was_deleted != is_deleted:
        changes.append(FieldChange("deleted", "changed", before=was_deleted, after=is_deleted))
    return changes


def changes_json(changes: Sequence[FieldChange]) -> str:
    """The changes as a JSON array (compact, as the domain's other answers)."""
    return json.dumps([c.as_json() for c in changes], separators=(",", ":"), ensure_ascii=False)


def diff_json(from_version: int | None, to_version: int, changes: Sequence[FieldChange]) -> str:
    """`{"from_version", "to_version", "changes"}`: the object a history entry carries."""
    from_text = "null" if from_version is None else str(int(from_version))
    return (
        f'{{"from_version":{from_text},"to_version":{int(to_version)},'
        f'"changes":{changes_json(changes)}}}'
    )
