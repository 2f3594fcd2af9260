"""Teaches schemathesis the string formats of the cloud's API that only the API can make.

The OpenAPI document names them (`format: cursor`, `format: openssh-public-key`); without these
strategies the fuzzer would send random text as "valid" cursors and keys and count the API's
400/422 as wrong. Loaded with SCHEMATHESIS_HOOKS=hooks (this directory on PYTHONPATH).
"""

import base64
import datetime
import struct

import schemathesis
from hypothesis import strategies as st


def _cursor(at: datetime.datetime, key) -> str:
    # `http/pagination.rs`: "<RFC 3339 with microseconds, Z>,<uuid>" in unpadded base64url.
    text = at.strftime("%Y-%m-%dT%H:%M:%S.%fZ") + "," + str(key)
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


schemathesis.openapi.format(
    "cursor",
    st.builds(
        _cursor,
        st.datetimes(min_value=datetime.datetime(2000, 1, 1), max_value=datetime.datetime(2100, 1, 1)),
        st.uuids(),
    ),
)


def _ed25519(key: bytes, comment: str) -> str:
    # The wire format of an ed25519 public key: string "ssh-ed25519", string 32-byte key.
    def field(b: bytes) -> bytes:
        return struct.pack(">I", len(b)) + b

    blob = field(b"ssh-ed25519") + field(key)
    line = "ssh-ed25519 " + base64.b64encode(blob).decode()
    return line + (" " + comment if comment else "")


schemathesis.openapi.format(
    "openssh-public-key",
    st.builds(
        _ed25519,
        st.binary(min_size=32, max_size=32),
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789@.-", max_size=32),
    ),
)
