"""Remote workers: CURVE keys. A worker bound to a network endpoint serves only the clients whose public
key is in its keys folder's authorized/; one without the right key, or without CURVE, gets nothing. A
network bind without keys is refused unless --insecure says so out loud."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest
import zmq

from diffusion_lens.auth import ClientKeys, KeysError, load_client_keys, load_worker_keys, write_keys
from tests.test_server import SERVER, Client

LOOPBACK = "tcp://127.0.0.1:*"


def refused(*args: str) -> str:
    """The worker's one stderr line when it refuses to start (exit code 2)."""
    process = subprocess.run(
        [sys.executable, str(SERVER), *args], stdin=subprocess.DEVNULL, capture_output=True, timeout=60
    )
    assert process.returncode == 2, process.stderr.decode()
    assert process.stdout == b""
    return process.stderr.decode().strip().splitlines()[-1]


def hello(c: Client) -> None:
    c.send(id="h", type="hello", protocol=1, client="pytest")


def try_hello(c: Client) -> None:
    """A hello from a client the worker refuses: once its handshake has failed it has no connection, and
    a DEALER's send waits for one, so this one does not wait."""
    with contextlib.suppress(zmq.Again):
        c.socket.send(
            msgpack.packb({"v": 1, "id": "h", "type": "hello", "protocol": 1, "client": "x"}), zmq.NOBLOCK
        )


def gets_nothing(c: Client, seconds: float = 2.0) -> bool:
    return not c.socket.poll(int(seconds * 1000))


def test_only_a_client_with_an_authorized_key_is_served(tmp_path):
    keys = write_keys(tmp_path / "keys")
    right = load_client_keys(keys)
    stranger = load_client_keys(write_keys(tmp_path / "stranger"))
    log = tmp_path / "worker.log"
    c = Client(args=("--bind", LOOPBACK, "--keys", str(keys)), stderr=log, curve=right)
    impostor = c.another(
        curve=ClientKeys(public=stranger.public, secret=stranger.secret, server=right.server)
    )
    plain = c.another()
    try:
        assert c.announcement["endpoint"].startswith("tcp://127.0.0.1:")
        hello(c)
        assert c.receive()["type"] == "ready"
        try_hello(impostor)
        try_hello(plain)
        c.send(id="p", type="ping")
        assert c.until("p", ("pong",))[-1]["type"] == "pong"
        assert gets_nothing(impostor) and gets_nothing(plain)
        c.send(id="p2", type="ping")
        assert c.until("p2", ("pong",))[-1]["type"] == "pong"  # the worker still serves the right one
        assert c.process.poll() is None
        assert "CURVE on: 1 authorized client certificate(s)" in c.log_text()
        # The secret key stays private.
        assert (keys / "worker.key_secret").stat().st_mode & 0o077 == 0
    finally:
        plain.close()
        impostor.close()
        c.close()


def test_a_network_bind_needs_keys_or_insecure(tmp_path):
    line = refused("--bind", LOOPBACK)
    assert line.startswith(f"error: --bind {LOOPBACK} listens on the network without authentication")
    assert "--keys DIR" in line and "`diffusion-lens keys DIR`" in line and "--insecure" in line
    log = tmp_path / "worker.log"
    c = Client(args=("--bind", LOOPBACK, "--insecure"), stderr=log)
    try:
        hello(c)
        assert c.receive()["type"] == "ready"
        assert "anyone who can reach this port can use this worker" in c.log_text()
    finally:
        c.close()
    # ipc needs neither (the socket is in a private folder), and gives no warning.
    # (Its own log: libraries may print unrelated warnings of their own.)
    c = Client(stderr=tmp_path / "ipc-worker.log")
    try:
        hello(c)
        assert c.receive()["type"] == "ready"
        assert "anyone who can reach this port" not in c.log_text()
    finally:
        c.close()


def test_unusable_keys_are_named(tmp_path):
    keys = write_keys(tmp_path / "keys")
    assert refused("--bind", LOOPBACK, "--keys", str(tmp_path / "none")) == (
        f"error: keys folder {tmp_path / 'none'} not found (make one with `diffusion-lens keys "
        f"{tmp_path / 'none'}`)"
    )
    (keys / "worker.key_secret").write_text('curve\n    public-key = "short"\n')
    assert refused("--bind", LOOPBACK, "--keys", str(keys)) == (
        f"error: key file {keys / 'worker.key_secret'}: its public-key is not a CURVE key (40 z85 characters)"
    )
    (keys / "worker.key_secret").unlink()
    assert refused("--bind", LOOPBACK, "--keys", str(keys)) == (
        f"error: secret key file {keys / 'worker.key_secret'} not found"
    )
    keys = write_keys(tmp_path / "keys2")
    (keys / "authorized" / "client.key").unlink()
    assert refused("--bind", LOOPBACK, "--keys", str(keys)).startswith(
        f"error: {keys / 'authorized'} holds no client certificates (*.key)"
    )
    shutil.rmtree(keys / "authorized")
    assert refused("--bind", LOOPBACK, "--keys", str(keys)).startswith(
        f"error: {keys / 'authorized'} not found"
    )


def test_key_files_are_read_as_zmq_auth_writes_them(tmp_path):
    """The layout of `diffusion-lens keys DIR`, written with pyzmq's own certificate writer, loads."""
    import zmq.auth

    keys = tmp_path / "keys"
    (keys / "authorized").mkdir(parents=True)
    worker_public_file, _ = zmq.auth.create_certificates(keys, "worker")
    client_public_file, _ = zmq.auth.create_certificates(keys, "client")
    shutil.copy(client_public_file, keys / "authorized")
    loaded = load_worker_keys(keys)
    client = load_client_keys(keys)
    assert loaded.public == zmq.auth.load_certificate(worker_public_file)[0] == client.server
    assert loaded.clients == 1
    (keys / "worker.key_secret").write_text((keys / "worker.key").read_text())
    with pytest.raises(KeysError, match="has no secret-key"):
        load_worker_keys(keys)


def test_write_keys_makes_the_layout(tmp_path):
    keys = write_keys(tmp_path / "k")
    names = sorted(str(path.relative_to(keys)) for path in keys.rglob("*"))
    assert names == [
        "authorized",
        "authorized/client.key",
        "client.key",
        "client.key_secret",
        "worker.key",
        "worker.key_secret",
    ]
    assert "secret-key" not in (keys / "client.key").read_text()
    assert Path(keys / "authorized" / "client.key").read_text() == (keys / "client.key").read_text()
