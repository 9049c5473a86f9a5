"""One client that never reads its replies must not stall the worker for the others: sends are
non-blocking into a bounded queue per client, and a client whose queue is full is dropped (its requests
cancelled), while the others keep getting their pongs and heartbeats on time."""

from __future__ import annotations

import threading
import time

import msgpack
import zmq

from tests.test_server import Client, generate_request, load


def test_a_client_that_does_not_read_is_dropped_and_the_others_stay_served(sd_dir, tmp_path):
    log = tmp_path / "worker.log"
    good = Client(stderr=log)  # heartbeats every 0.5 s
    flooder = good.another()
    try:
        for c in (good, flooder):
            c.send(id="h", type="hello", protocol=1, client="pytest")
            assert c.receive()["type"] == "ready"
        # The flooder starts a long generate, then sends pings as fast as it can and never reads again.
        assert load(flooder, sd_dir)["type"] == "loaded"
        flooder.send(**generate_request("long", layers=range(6), seeds=range(8), steps=40, max_batch=1))
        while flooder.receive()["type"] != "progress":
            pass
        stop = threading.Event()
        sent = [0]

        def flood() -> None:
            ping = msgpack.packb({"v": 1, "id": "", "type": "ping"})
            while not stop.is_set():
                try:
                    flooder.socket.send(ping, zmq.NOBLOCK)
                    sent[0] += 1
                except zmq.Again:  # its own send queue is full: the worker is not taking more
                    time.sleep(0.001)

        flooding = threading.Thread(target=flood)
        flooding.start()
        # The good client pings every 100 ms for 8 s; every reply (pong or heartbeat) is timed.
        started = last = time.monotonic()
        gaps, pongs, busy = [], [], []
        try:
            n = 0
            while time.monotonic() - started < 8:
                good.send(id=f"p{n}", type="ping")
                n += 1
                tick = time.monotonic() + 0.1
                while (left := tick - time.monotonic()) > 0:
                    if not good.socket.poll(int(left * 1000) + 1):
                        continue
                    message = msgpack.unpackb(good.socket.recv(), raw=False)
                    now = time.monotonic()
                    gaps.append(now - last)
                    last = now
                    if message["type"] == "pong":
                        pongs.append(now)
                        busy.append(message["busy"])
        finally:
            stop.set()
            flooding.join()
        assert sent[0] > 10_000, "the flooder did not flood"
        assert max(gaps) < 1.0, f"the good client waited {max(gaps):.2f} s for a reply"
        assert len(pongs) >= 70
        # The flooder was dropped and its generate cancelled: the worker is idle again.
        text = good.log_text()
        assert f"client {flooder_identity(text)} does not read its replies" in text
        assert "dropped; 1 of its requests cancelled" in text
        assert busy[0] is True and busy[-1] is False
        assert good.process.poll() is None
        good.send(id="last", type="ping")
        assert good.until("last", ("pong",))[-1]["busy"] is False
        # What the flooder sends from now on is ignored.
        flooder.send(id="after", type="ping")
        ids = set()
        while flooder.socket.poll(1500):
            ids.add(msgpack.unpackb(flooder.socket.recv(), raw=False)["id"])
        assert ids <= {"", "long"} and "after" not in ids
    finally:
        flooder.close()
        good.close()


def flooder_identity(log_text: str) -> str:
    """The hex identity the worker names in its one 'does not read' line."""
    (line,) = [line for line in log_text.splitlines() if "does not read its replies" in line]
    return line.split("client ", 1)[1].split(" ", 1)[0]
