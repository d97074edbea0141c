"""CURVE key pairs for bus endpoints reachable from other machines, and the ``slam-keys`` command.

``slam-keys DIR --name NAME`` writes ``DIR/NAME.key`` (public key, to hand out) and
``DIR/NAME.key_secret`` (public and secret key, mode 0600, stays on its machine), in
the ZeroMQ certificate format (``zmq.auth``).

A server gets its own secret file and a folder of the public keys of the clients it
accepts (their ``*.key`` files); a client gets its own secret file and the server's
public key. A client whose key is not in the folder is refused during the handshake:
it can neither read nor inject messages.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth


class KeyFileError(ValueError):
    """A key file that is missing or holds no usable key."""


@dataclass(frozen=True)
class CurveKeyPair:
    """A CURVE key pair, both keys Z85-encoded (40 characters)."""

    public: bytes
    secret: bytes

    def __repr__(self) -> str:  # never print a secret key into a log
        return f"CurveKeyPair(public={self.public.decode()!r}, secret=...)"


@dataclass(frozen=True)
class CurveServer:
    """Server side of CURVE: our key pair and the folder of allowed client public keys (``*.key``)."""

    keys: CurveKeyPair
    clients_dir: Path


@dataclass(frozen=True)
class CurveClient:
    """Client side of CURVE: our key pair and the server's public key (Z85)."""

    keys: CurveKeyPair
    server_key: bytes


def generate_keypair(directory: str | Path, name: str = "server", force: bool = False) -> tuple[Path, Path]:
    """Write ``NAME.key`` and ``NAME.key_secret`` (mode 0600) into ``directory``; returns (public, secret) paths.

    The files are written in a private temporary folder and moved in, so the secret key is never
    readable by others, not even for a moment. Refuses to overwrite existing keys unless ``force``.
    """
    if not zmq.has("curve"):
        raise RuntimeError("this libzmq has no CURVE support (built without libsodium)")
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"invalid key name {name!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    public, secret = directory / f"{name}.key", directory / f"{name}.key_secret"
    if not force and (public.exists() or secret.exists()):
        raise FileExistsError(f"{public} or {secret} exists; pass --force to replace the key pair")
    tmp = tempfile.mkdtemp(dir=directory, prefix=".keys-")  # mode 0700
    try:
        pub_tmp, sec_tmp = zmq.auth.create_certificates(tmp, name)
        os.chmod(sec_tmp, 0o600)
        os.chmod(pub_tmp, 0o644)
        os.replace(sec_tmp, secret)
        os.replace(pub_tmp, public)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return public, secret


def load_keypair(secret_file: str | Path) -> CurveKeyPair:
    """The key pair of a ``NAME.key_secret`` file."""
    public, secret = _load(secret_file)
    if secret is None:
        raise KeyFileError(f"{secret_file}: holds no secret key (pass the .key_secret file)")
    return CurveKeyPair(public, secret)


def load_public_key(key_file: str | Path) -> bytes:
    """The public key (Z85) of a ``NAME.key`` or ``NAME.key_secret`` file."""
    return _load(key_file)[0]


def _load(path: str | Path) -> tuple[bytes, bytes | None]:
    try:
        return zmq.auth.load_certificate(path)
    except (OSError, ValueError) as e:
        raise KeyFileError(f"{path}: cannot load a CURVE key: {e}") from None


def curve_server(secret_file: str | Path, clients_dir: str | Path) -> CurveServer:
    """Server keys from its secret file and the folder of allowed client public keys."""
    clients_dir = Path(clients_dir)
    if not clients_dir.is_dir():
        raise KeyFileError(f"{clients_dir}: no such folder of allowed client keys")
    return CurveServer(load_keypair(secret_file), clients_dir)


def curve_client(secret_file: str | Path, server_public_file: str | Path) -> CurveClient:
    """Client keys from its secret file and the server's public key file."""
    return CurveClient(load_keypair(secret_file), load_public_key(server_public_file))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="slam-keys", description="Generate a CURVE key pair for a bus endpoint.")
    p.add_argument("dir", type=Path, help="folder to write NAME.key (public) and NAME.key_secret (secret, 0600)")
    p.add_argument("--name", default="server", help="key name, e.g. server, robot, laptop (default: server)")
    p.add_argument("--force", action="store_true", help="replace an existing key pair of that name")
    args = p.parse_args(argv)
    try:
        public, secret = generate_keypair(args.dir, args.name, args.force)
    except (FileExistsError, ValueError, RuntimeError, OSError) as e:
        p.error(str(e))
    print(f"public key: {public}  (hand out: clients need the server's, a server's clients folder holds clients')")
    print(f"secret key: {secret}  (mode 0600; keep it on this machine)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
