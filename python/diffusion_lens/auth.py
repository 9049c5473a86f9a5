"""ZeroMQ CURVE keys of remote workers: loading them, and (for tests) making them.

The layout of a keys folder (``diffusion-lens keys DIR`` writes it; ``write_keys`` below makes the same
one for tests):

    DIR/worker.key          the worker's public certificate (ZPL, as pyzmq's zmq.auth writes it: a
                            ``curve`` section with ``public-key = "<z85>"``)
    DIR/worker.key_secret   the worker's key pair (``public-key`` and ``secret-key``)
    DIR/client.key          the client's public certificate
    DIR/client.key_secret   the client's key pair
    DIR/authorized/         the public certificates (*.key) of the clients the worker accepts

A worker started with ``--keys DIR`` serves CURVE with its own pair and accepts only clients whose public
key is in ``DIR/authorized`` (a ZAP handler, zmq.auth's ThreadAuthenticator); any other client, and one
without CURVE, gets nothing: its handshake fails.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import zmq
from zmq.utils import z85

WORKER_PUBLIC = "worker.key"
WORKER_SECRET = "worker.key_secret"
CLIENT_PUBLIC = "client.key"
CLIENT_SECRET = "client.key_secret"
AUTHORIZED = "authorized"


class KeysError(Exception):
    """A keys folder or key file that cannot be used; the message names the file and what is wrong."""


@dataclass(frozen=True)
class WorkerKeys:
    public: bytes  # z85, 40 characters
    secret: bytes
    authorized: Path  # the folder of accepted clients' public certificates
    clients: int  # how many certificates it holds


@dataclass(frozen=True)
class ClientKeys:
    public: bytes
    secret: bytes
    server: bytes  # the worker's public key


def _z85_key(path: Path, value: bytes | None, what: str) -> bytes:
    if value is None:
        raise KeysError(f'key file {path} has no {what} (a line `{what} = "<40 z85 characters>"`)')
    try:
        valid = len(value) == 40 and len(z85.decode(value)) == 32
    except (ValueError, KeyError, IndexError):
        valid = False
    if not valid:
        raise KeysError(f"key file {path}: its {what} is not a CURVE key (40 z85 characters)")
    return value


def read_certificate(path: str | os.PathLike[str], secret: bool = False) -> tuple[bytes, bytes | None]:
    """The (public, secret) keys of a ZPL certificate file; ``secret``: the secret key must be there."""
    file = Path(path)
    if not file.is_file():
        kind = "secret key file" if secret else "key file"
        raise KeysError(f"{kind} {file} not found" + (" (it is a folder)" if file.is_dir() else ""))
    public_key: bytes | None = None
    secret_key: bytes | None = None
    try:
        lines = file.read_bytes().splitlines()
    except OSError as exc:
        raise KeysError(f"cannot read key file {file}: {exc.strerror or exc}") from None
    # The same reading as zmq.auth.load_certificate's (which the authenticator uses), with our errors.
    for raw in lines:
        line = raw.strip()
        if line.startswith(b"#"):
            continue
        if line.startswith(b"public-key") and b"=" in line:
            public_key = line.split(b"=", 1)[1].strip(b" \t'\"")
        if line.startswith(b"secret-key") and b"=" in line:
            secret_key = line.split(b"=", 1)[1].strip(b" \t'\"")
    public_key = _z85_key(file, public_key, "public-key")
    if secret:
        secret_key = _z85_key(file, secret_key, "secret-key")
        if zmq.curve_public(secret_key) != public_key:
            raise KeysError(f"key file {file}: its public-key is not the secret-key's")
    return public_key, secret_key


def load_worker_keys(folder: str | os.PathLike[str]) -> WorkerKeys:
    """The worker's pair and its accepted clients, checked; KeysError names the file at fault."""
    root = Path(folder)
    if not root.is_dir():
        raise KeysError(
            f"keys folder {root} not found (make one with `diffusion-lens keys {root}`)"
            if not root.exists()
            else f"keys folder {root} is not a folder"
        )
    public, secret = read_certificate(root / WORKER_SECRET, secret=True)
    assert secret is not None
    authorized = root / AUTHORIZED
    if not authorized.is_dir():
        raise KeysError(
            f"{authorized} not found: it holds the public certificates (*.key) of the clients the "
            f"worker accepts (`diffusion-lens keys {root}` makes it with client.key in it)"
        )
    certificates = sorted(authorized.glob("*.key"))
    for certificate in certificates:
        read_certificate(certificate)
    if not certificates:
        raise KeysError(
            f"{authorized} holds no client certificates (*.key), so no client could connect: copy a "
            f"client's public certificate (its client.key) there"
        )
    return WorkerKeys(public=public, secret=secret, authorized=authorized, clients=len(certificates))


def load_client_keys(folder: str | os.PathLike[str]) -> ClientKeys:
    """A client's pair and the worker's public key from a keys folder (tests, the fuzzer)."""
    root = Path(folder)
    public, secret = read_certificate(root / CLIENT_SECRET, secret=True)
    server, _ = read_certificate(root / WORKER_PUBLIC)
    assert secret is not None
    return ClientKeys(public=public, secret=secret, server=server)


def _write_certificate(path: Path, public: bytes, secret: bytes | None) -> None:
    kind = "Secret" if secret else "Public"
    lines = [
        f"#   ZeroMQ CURVE {kind} Certificate (diffusion-lens)",
        *(["#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions."] if secret else []),
        "",
        "metadata",
        "curve",
        f'    public-key = "{public.decode()}"',
        *([f'    secret-key = "{secret.decode()}"'] if secret else []),
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
    if secret:
        path.chmod(0o600)


def write_keys(folder: str | os.PathLike[str]) -> Path:
    """Makes the layout above in ``folder`` with fresh key pairs (``zmq.curve_keypair``): what
    ``diffusion-lens keys DIR`` makes, for tests. Returns the folder."""
    root = Path(folder)
    (root / AUTHORIZED).mkdir(parents=True, exist_ok=True)
    for name in ("worker", "client"):
        public, secret = zmq.curve_keypair()
        _write_certificate(root / f"{name}.key", public, None)
        _write_certificate(root / f"{name}.key_secret", public, secret)
    shutil.copyfile(root / CLIENT_PUBLIC, root / AUTHORIZED / CLIENT_PUBLIC)
    return root


def start_authenticator(context: zmq.Context, keys: WorkerKeys):  # -> ThreadAuthenticator
    """A ZAP handler on ``context`` that accepts the clients in ``keys.authorized`` and no others. Start it
    before the socket binds; stop it before the context terminates."""
    from zmq.auth.thread import ThreadAuthenticator

    authenticator = ThreadAuthenticator(context)
    authenticator.start()
    authenticator.configure_curve(domain="*", location=str(keys.authorized))
    return authenticator


def serve_curve(socket: zmq.Socket, keys: WorkerKeys) -> None:
    """Make ``socket`` (before it binds) a CURVE server with the worker's pair."""
    socket.curve_secretkey = keys.secret
    socket.curve_publickey = keys.public
    socket.curve_server = True


def connect_curve(socket: zmq.Socket, keys: ClientKeys) -> None:
    """Make ``socket`` (before it connects) a CURVE client of the worker with the client's pair."""
    socket.curve_secretkey = keys.secret
    socket.curve_publickey = keys.public
    socket.curve_serverkey = keys.server
