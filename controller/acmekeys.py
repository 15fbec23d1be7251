"""ACME certificate keys sealed for the Swarm, so a pass can hand them to signal-mode proxies.

Why: a Docker secret cannot be read back through the Engine API, and a level-triggered pass
must have a key's text on every pass to write it beside a proxy's config in place (a renewal
is then one in-place reload, not a service update that restarts the proxy's tasks). So each
key is also kept, encrypted, in the controller's own Docker config (``acme.py``: the order
record and then the certificate's ``pair`` record) and opened here, in memory only, pass by
pass. Nothing opened is logged, labelled or written anywhere but into the proxies.

The sealing key is derived (HKDF-SHA256) from the ACME account key, which the controller alone
mounts as a secret: whoever can read the configs but not that secret reads only ciphertext.
AES-256-GCM, a fresh 96-bit nonce per box, and the key secret's name as associated data, so a
box copied under another certificate's name does not open.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .acme import Pair

INFO = b"interlock acme key box v1"
NONCE_BYTES = 12


def sealing_key(account_pem: bytes) -> bytes:
    """The AES key, derived from the account key's private bytes (never stored)."""
    private = serialization.load_pem_private_key(account_pem, password=None)
    raw = private.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=INFO).derive(raw)


def seal(sealing: bytes, key_pem: str, name: str) -> str:
    """The key's PEM encrypted for the Swarm, bound to its key secret's ``name``."""
    nonce = os.urandom(NONCE_BYTES)
    box = AESGCM(sealing).encrypt(nonce, key_pem.encode(), name.encode())
    return base64.urlsafe_b64encode(nonce + box).decode()


def unseal(sealing: bytes, box: str, name: str) -> str | None:
    """The key's PEM, or None when the box does not open (another account key, tampered)."""
    try:
        raw = base64.urlsafe_b64decode(box.encode())
        plain = AESGCM(sealing).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], name.encode())
    except (InvalidTag, ValueError):
        return None
    return plain.decode()


def read_sealing_key(path: str) -> bytes | None:
    """The sealing key from the mounted account key; None without one (then certificates are
    mounted as secrets, as before)."""
    try:
        return sealing_key(Path(path).read_bytes())
    except (OSError, ValueError, TypeError):
        return None


def open_pairs(pairs: Mapping[str, Pair], sealing: bytes | None) -> dict[str, tuple[str, str]]:
    """cert secret name -> (chain, key PEM) of every pair whose box opens."""
    if sealing is None:
        return {}
    found = {}
    for name, pair in pairs.items():
        key = unseal(sealing, pair.key_box, pair.key_secret)
        if key is not None:
            found[name] = (pair.chain, key)
    return found
