"""The JSON of a token read's answer (`TokenOut`), rendered by hand.

Everything in it but the access token comes from the connection's row, so it is rendered once
per row (`TokenAnswer.of`) and a cached row's answer is that rendering with the token, decrypted
for the request, escaped into its place (`TokenAnswer.json`): the hot read skips a generic
encoder walking a dict, and a second validation of a shape made here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from json.encoder import encode_basestring_ascii


def _string(value: str | None) -> str:
    return "null" if value is None else encode_basestring_ascii(value)


@dataclass(frozen=True, slots=True)
class TokenAnswer:
    """The answer's JSON before (`head`) and after (`tail`) the access token's value."""

    head: bytes
    tail: bytes

    @classmethod
    def of(
        cls,
        provider: str,
        branch_id: str,
        token_type: str,
        expires_at: datetime | None,
        scope: str | None,
    ) -> TokenAnswer:
        expires = expires_at.isoformat() if expires_at is not None else None
        head = f'{{"provider":{_string(provider)},"branch_id":{_string(branch_id)},"access_token":'
        tail = (
            f',"token_type":{_string(token_type)},"expires_at":{_string(expires)},'
            f'"scope":{_string(scope)}}}'
        )
        # ASCII: every character beyond it is escaped.
        return cls(head.encode("ascii"), tail.encode("ascii"))

    def json(self, access_token: str) -> bytes:
        return self.head + encode_basestring_ascii(access_token).encode("ascii") + self.tail
