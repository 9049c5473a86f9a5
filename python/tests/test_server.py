"""The worker process end to end over ZeroMQ, from a plain pyzmq DEALER (independent of the TS bridge).
Every message the worker sends, and its listening line, is checked against the protocol's schema."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import pytest
import zmq
from jsonschema import Draft202012Validator

from diffusion_lens import protocol

SERVER = Path(__file__).resolve().parents[1] / "lens_server.py"


class Client:
    """A worker process and a DEALER connected to it; ``another()`` connects a second client to the same
    worker. ``stderr``: a file for the worker's log (else discarded)."""

    def __init__(
        self,
        heartbeat: float = 0.5,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
        stderr: Path | None = None,
        worker: subprocess.Popen | None = None,
        endpoint: str | None = None,
        curve: object = None,  # diffusion_lens.auth.ClientKeys
    ) -> None:
        self.owner = worker is None
        if worker is None:
            self.log = stderr
            self.process = subprocess.Popen(
                [sys.executable, str(SERVER), "--heartbeat", str(heartbeat), *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL if stderr is None else stderr.open("wb"),
                env=None if env is None else {**os.environ, **env},
            )
            assert self.process.stdout is not None
            self.announcement = json.loads(self.process.stdout.readline())
            Draft202012Validator(protocol.SCHEMA["listening"]).validate(self.announcement)
            endpoint = self.announcement["endpoint"]
        else:
            self.process, self.log = worker, None
        assert endpoint is not None
        self.endpoint = endpoint
        self.received: list[dict] = []  # every message, heartbeats included
        self.socket = zmq.Context.instance().socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            from diffusion_lens.auth import connect_curve

            connect_curve(self.socket, curve)  # type: ignore[arg-type]
        self.socket.connect(endpoint)

    def another(self, curve: object = None) -> Client:
        """A second client of the same worker (its own DEALER, so its own identity)."""
        return Client(worker=self.process, endpoint=self.endpoint, curve=curve)

    def log_text(self) -> str:
        assert self.log is not None
        return self.log.read_text(errors="replace")

    def send(self, **message: object) -> None:
        self.socket.send(msgpack.packb({"v": 1, **message}, use_bin_type=True))

    def receive(self, timeout: float = 30.0, skip_heartbeats: bool = True) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.socket.poll(int(remaining * 1000)):
                raise TimeoutError("no message from the worker")
            message = msgpack.unpackb(self.socket.recv(), raw=False)
            problem = protocol.reply_problem(message)
            assert problem is None, f"the worker sent a message the protocol schema refuses: {problem}"
            self.received.append(message)
            if not (skip_heartbeats and message["type"] == "heartbeat"):
                return message

    def until(self, request_id: str, final: tuple[str, ...] = ("done", "error")) -> list[dict]:
        messages = []
        while True:
            message = self.receive()
            if message["id"] == request_id:
                messages.append(message)
                if message["type"] in final:
                    return messages

    def close(self) -> None:
        self.socket.close()
        if not self.owner:
            return
        if self.process.poll() is None:
            self.process.terminate()  # SIGTERM: the worker removes its socket folder
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process.wait(10)


@pytest.fixture
def client():
    c = Client()
    c.send(id="h", type="hello", protocol=1, client="pytest")
    assert c.receive()["type"] == "ready"
    yield c
    c.close()


def load_fields(model: Path | str, stage2: Path | None = None, config: Path | None = None, lora=()) -> dict:
    """A load request's fields (less v, id and type), as the bridge sends them."""
    return dict(
        model=str(model), family=None, dtype="auto", device="cpu",
        revision=None, offload="none", allow_pickle=False, variant=None, family_options={},
        stage2=None if stage2 is None else {"model": str(stage2), "revision": None},
        config=None if config is None else str(config), lora=list(lora), compile=False,
    )  # fmt: skip


def load(
    client: Client,
    model: Path | str,
    stage2: Path | None = None,
    config: Path | None = None,
    lora=(),
    request_id: str = "load",
) -> dict:
    client.send(id=request_id, type="load", **load_fields(model, stage2, config, lora))
    return client.until(request_id, ("loaded", "error"))[-1]


def generate_request(request_id: str, layers, seeds, steps: int = 2, max_batch: int = 8) -> dict:
    return {
        "id": request_id, "type": "generate", "prompts": ["a red apple"],
        "items": [{"prompt": 0, "layer": layer, "seed": seed} for layer in layers for seed in seeds],
        "negative": "", "steps": steps, "guidance": 7.5, "height": 32, "width": 32,
        "scheduler": None, "uncond": "final", "noise": "shared", "encoders": None, "pooled": "final",
        "tokens": "all", "mix": None, "embeds": None,
        "max_batch": max_batch, "stage2": None, "family_options": {},
    }  # fmt: skip


def test_announcement_and_handshake():
    c = Client()
    try:
        assert c.announcement["protocol"] == 1 and c.announcement["endpoint"].startswith("ipc://")
        c.send(id="h", type="hello", protocol=2, client="future")
        assert c.receive()["code"] == "version_mismatch"
        c.send(id="h2", type="hello", protocol=1, client="pytest")
        ready = c.receive()
        families = {family["name"]: family for family in ready["families"]}
        assert ready["type"] == "ready"
        assert list(families) == ["sd", "if", "pixart", "sdxl", "flux", "sd3", "sana"]
        assert "euler" in families["sd"]["schedulers"] and "euler" not in families["if"]["schedulers"]
        assert families["if"]["stages"] == 2 and families["sd"]["stages"] == 1
        assert families["if"]["options"]["stage2"]["properties"]["noise_level"]["default"] == 250
        heartbeat = c.receive(timeout=5, skip_heartbeats=False)
        assert heartbeat["type"] == "heartbeat" and heartbeat["id"] == "" and heartbeat["busy"] is False
    finally:
        c.close()


def test_generate_streams_progress_and_images(client, sd_dir):
    loaded = load(client, sd_dir)
    assert loaded["type"] == "loaded" and loaded["num_layers"] == 5 and loaded["family"] == "sd"
    client.send(**generate_request("g", layers=[0, 5], seeds=[0, 1]))
    messages = client.until("g")
    images = [m for m in messages if m["type"] == "image"]
    assert messages[-1]["type"] == "done" and messages[-1]["images"] == 4
    assert sorted((m["layer"], m["seed"]) for m in images) == [(0, 0), (0, 1), (5, 0), (5, 1)]
    assert all(m["png"].startswith(b"\x89PNG") and m["width"] == 32 for m in images)
    units = [m["done_units"] for m in messages if m["type"] == "progress"]
    assert units == sorted(units) and units[-1] == 4 * 2


def test_if_two_stages_over_the_protocol(client, if_dir, if_sr_dir, sd_dir):
    loaded = load(client, if_dir, stage2=if_sr_dir)
    assert loaded["type"] == "loaded" and loaded["family"] == "if" and loaded["num_layers"] == 4
    assert loaded["family_options"] == {"clean_caption": True} and loaded["notices"] == []
    assert loaded["capabilities"]["name"] == "if" and loaded["capabilities"]["stages"] == 2
    (encoder,) = loaded["encoders"]
    assert encoder["name"] == "text_encoder" and encoder["class_name"] == "T5EncoderModel"
    assert encoder["layers"] == 4 and encoder["indices"] == [0, 1, 2, 3, 4]
    assert loaded["stage2"]["pipeline_class"] == "IFSuperResolutionPipeline"
    stage2 = {
        "steps": 2,
        "guidance": 4,
        "height": 32,
        "width": 32,
        "scheduler": None,
        "seed": None,
        "family_options": {"noise_level": 100},
    }
    # The family checks its own options: noise_level is a stage II option, and an integer.
    client.send(**{**generate_request("o1", layers=[0], seeds=[0]), "family_options": {"noise_level": 1}})
    refused = client.until("o1")[-1]
    assert refused["code"] == "bad_request"
    assert refused["message"].startswith("family_options.noise_level: the if family has no such option")
    bad_level = {**stage2, "family_options": {"noise_level": "high"}}
    client.send(**{**generate_request("o2", layers=[0], seeds=[0]), "stage2": bad_level})
    assert (
        "field 'stage2.family_options.noise_level' must be a non-negative integer"
        in client.until("o2")[-1]["message"]
    )
    request = {
        **generate_request("g", layers=[0, 4], seeds=[3], steps=2),
        "height": 16,
        "width": 16,
        "stage2": stage2,
    }
    client.send(**request)
    messages = client.until("g")
    assert messages[-1]["type"] == "done" and messages[-1]["images"] == 2
    images = [m for m in messages if m["type"] == "image"]
    assert sorted((m["item"], m["stage"], m["width"]) for m in images) == [
        (0, 1, 16),
        (0, 2, 32),
        (1, 1, 16),
        (1, 2, 32),
    ]
    units = [(m["done_units"], m["total_units"]) for m in messages if m["type"] == "progress"]
    assert units[-1] == (2 * (2 + 2), 2 * (2 + 2))
    # An SD model refuses stage II settings, and stage II checkpoints.
    assert load(client, sd_dir)["type"] == "loaded"
    client.send(**{**generate_request("sd2", layers=[0], seeds=[0]), "stage2": stage2})
    assert "no stage II model is loaded" in client.until("sd2")[-1]["message"]
    refused = load(client, sd_dir, stage2=if_sr_dir)
    assert refused["code"] == "load_failed" and "the sd family has no stage II" in refused["message"]


def test_a_single_file_with_a_lora_loads_and_reports_them(client, sd_dir, tmp_path):
    from diffusion_lens.fixtures import save_lora, save_single_file, tiny_sd_pipeline

    file = save_single_file(tiny_sd_pipeline(), tmp_path / "sd.safetensors")
    lora = save_lora(tiny_sd_pipeline(), tmp_path / "style.safetensors")
    loaded = load(client, file, config=sd_dir, lora=[{"path": str(lora), "scale": 0.5}])
    assert loaded["type"] == "loaded" and loaded["family"] == "sd" and loaded["config"] == str(sd_dir)
    assert loaded["lora"] == [{"path": str(lora), "scale": 0.5, "components": ["text_encoder", "unet"]}]
    client.send(**generate_request("g", layers=[5], seeds=[0]))
    assert client.until("g")[-1]["type"] == "done"
    # A folder has its own configuration: a config beside it is a user's error, said as one.
    refused = load(client, sd_dir, config=sd_dir)
    assert refused["code"] == "load_failed" and refused["traceback"] is None
    assert "is for a single-file checkpoint" in refused["message"]


def test_errors_do_not_kill_the_worker(client, sd_dir):
    client.send(**generate_request("early", layers=[0], seeds=[0]))
    assert client.until("early")[-1]["code"] == "not_loaded"
    client.socket.send(b"\x93\x01\x02")  # msgpack, but not a map
    assert client.receive()["code"] == "bad_message"
    assert load(client, sd_dir / "missing")["code"] == "load_failed"
    assert load(client, sd_dir)["type"] == "loaded"
    client.send(**generate_request("far", layers=[9], seeds=[0]))
    error = client.until("far")[-1]
    assert error["code"] == "bad_request" and "out of range 0..5" in error["message"]
    client.send(id="p", type="ping")
    assert client.receive()["type"] == "pong"


def test_an_embeds_file_is_read_and_checked_against_its_hash(client, sd_dir, tmp_path):
    import hashlib

    import torch

    from diffusion_lens.ablations import save_embeds

    path = save_embeds(tmp_path / "e.safetensors", {"prompt_embeds": torch.zeros(1, 77, 40)})
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert load(client, sd_dir)["type"] == "loaded"
    request = generate_request("e", layers=[2], seeds=[0], steps=1)
    client.send(**{**request, "embeds": {"path": str(path), "sha256": digest}, "tokens": "all"})
    assert client.until("e")[-1]["type"] == "done"
    client.send(**{**request, "id": "stale", "embeds": {"path": str(path), "sha256": "0" * 64}})
    error = client.until("stale")[-1]
    assert error["code"] == "bad_request" and "has changed since it was checked" in error["message"]
    client.send(**{**request, "id": "tok", "tokens": 2})
    done = client.until("tok")[-1]
    assert done["type"] == "done" and done["lensed_tokens"][0]["positions"] == [2]


def test_what_the_user_must_be_told(sd_dir, tmp_path):
    """An uncached hub id offline, a guidance that would make a black image, a prompt cut to 77 tokens."""
    c = Client(env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)})
    try:
        error = load(c, "org/name")
        assert error["code"] == "load_failed" and error["traceback"] is None
        assert error["message"].startswith('cannot reach the Hugging Face hub for "org/name" (HF_HUB_OFFLINE')
        assert f"HF_HOME={tmp_path}" in error["message"]
        assert load(c, sd_dir)["type"] == "loaded"
        c.send(**{**generate_request("black", layers=[0], seeds=[0]), "guidance": float("inf")})
        error = c.until("black")[-1]
        assert (
            error["code"] == "bad_message"
            and error["message"] == "generate: guidance = inf is out of range 0..100"
        )
        request = generate_request("long", layers=[0], seeds=[0], steps=1)
        request["prompts"] = ["a red apple", "x " * 80]
        request["items"] = [{"prompt": 1, "layer": 0, "seed": 0}, {"prompt": 0, "layer": 0, "seed": 0}]
        c.send(**request)
        done = c.until("long")[-1]
        assert done["type"] == "done" and done["truncated"] == [{"prompt": 1, "tokens": 82, "max_tokens": 77}]
    finally:
        c.close()


def test_ping_and_cancel_are_served_during_a_request(client, sd_dir):
    load(client, sd_dir)
    client.send(**generate_request("long", layers=range(6), seeds=range(4), steps=30, max_batch=1))
    while client.receive()["type"] != "progress":
        pass
    started = time.monotonic()
    client.send(id="p", type="ping")
    pong = client.until("p", ("pong",))[-1]
    assert pong["busy"] is True and time.monotonic() - started < 2
    client.send(id="c", type="cancel", target="long")
    messages = client.until("long")
    assert messages[-1]["code"] == "cancelled"
    assert {"v": 1, "id": "c", "type": "ack", "target": "long"} in client.received
    assert sum(m["type"] == "image" for m in messages) < 24


def test_shutdown_and_stdin_eof_end_the_process():
    c = Client()
    c.send(id="p", type="ping")
    assert c.receive() == {"v": 1, "id": "p", "type": "pong", "busy": False}
    c.send(id="s", type="shutdown")
    assert c.receive()["type"] == "bye"
    assert c.process.wait(10) == 0
    c.close()

    orphan = Client()
    assert orphan.process.stdin is not None
    orphan.process.stdin.close()  # what the OS does when the parent dies
    assert orphan.process.wait(10) == 0
    orphan.close()


# --- several clients, ids, versions, the warm worker ---------------------------------------------------


def test_only_the_integer_1_is_version_1(client):
    for version in (1.0, True, "1", None, 0, 2):
        client.send(id="p", type="ping", v=version)
        reply = client.receive()
        assert (reply["id"], reply["code"]) == ("p", "version_mismatch"), version
        assert f"protocol version {version!r} is not supported" in reply["message"]
    client.send(id="p", type="ping", v=1)
    assert client.receive()["type"] == "pong"
    for version in (1.0, True):
        with pytest.raises(protocol.ProtocolError) as caught:
            protocol.decode(msgpack.packb({"v": version, "id": "x", "type": "ping"}))
        assert caught.value.code == "version_mismatch"


def test_request_ids_belong_to_their_client(client, sd_dir):
    """Two clients using the same ids get their own replies; a cancel names the sender's own request."""
    other = client.another()
    try:
        other.send(id="h", type="hello", protocol=1, client="other")
        assert other.receive()["type"] == "ready"
        assert load(client, sd_dir)["type"] == "loaded"
        assert load(other, sd_dir)["type"] == "loaded"  # the same load: answered at once
        client.send(**generate_request("r1", layers=[1], seeds=[10, 11]))
        other.send(**generate_request("r1", layers=[2], seeds=[20]))
        other.send(id="c", type="cancel", target="r1")  # other's r1, not client's
        mine, theirs = client.until("r1"), other.until("r1")
        assert mine[-1]["type"] == "done" and mine[-1]["images"] == 2
        assert sorted((m["layer"], m["seed"]) for m in mine if m["type"] == "image") == [(1, 10), (1, 11)]
        assert theirs[-1]["type"] in ("done", "error")
        assert all((m["layer"], m["seed"]) == (2, 20) for m in theirs if m["type"] == "image")
        if theirs[-1]["type"] == "error":
            assert theirs[-1]["code"] == "cancelled"
        assert not [m for m in client.received if m["type"] == "ack"]
        assert {"v": 1, "id": "c", "type": "ack", "target": "r1"} in other.received
    finally:
        other.close()


def test_an_id_in_use_is_refused_and_the_first_request_goes_on(client, sd_dir):
    assert load(client, sd_dir)["type"] == "loaded"
    client.send(**generate_request("r1", layers=[0, 1], seeds=[0, 1], steps=10, max_batch=1))
    client.send(**generate_request("q", layers=[0], seeds=[0]))
    client.send(**generate_request("r1", layers=[5], seeds=[9]))  # r1 is running (or about to run)
    client.send(**generate_request("q", layers=[5], seeds=[9]))  # q is queued behind r1
    client.send(id="r1", type="load", **load_fields(sd_dir))
    client.send(id="q", type="score", scorer={"kind": "shapes", "model": None, "revision": None,
                "device": "cpu", "dtype": "auto"},
                items=[{"png": b"\x89PNG", "prompt": "", "questions": []}])  # fmt: skip
    # The refusals come from the I/O thread, the first requests' messages from the compute thread.
    refusals, streams, finished = [], {"r1": [], "q": []}, set()
    while finished != {"r1", "q"}:
        message = client.receive()
        if message["type"] == "error" and "already in use" in message["message"]:
            refusals.append((message["id"], message["code"], message["message"]))
            continue
        streams[message["id"]].append(message)
        if message["type"] in ("done", "error"):
            finished.add(message["id"])
    # r1 is running, or still queued if the compute thread has not taken it yet (each refusal says which
    # it was at that moment); q waits behind it.
    r1_refused = r"request id 'r1' is already in use by a (running|queued) generate request"
    q_refused = "request id 'q' is already in use by a queued generate request"
    assert [(request_id, code) for request_id, code, _ in refusals] == [
        ("r1", "bad_request"),
        ("q", "bad_request"),
    ] * 2
    assert all(re.fullmatch(r1_refused, text) for request_id, _, text in refusals if request_id == "r1")
    assert all(text == q_refused for request_id, _, text in refusals if request_id == "q")
    first = streams["r1"]
    assert first[-1]["type"] == "done" and first[-1]["images"] == 4
    assert {(m["layer"], m["seed"]) for m in first if m["type"] == "image"} == {
        (0, 0),
        (0, 1),
        (1, 0),
        (1, 1),
    }
    assert streams["q"][-1]["type"] == "done" and streams["q"][-1]["images"] == 1
    # Once a request has ended, its id is free again.
    client.send(**generate_request("r1", layers=[5], seeds=[9]))
    assert client.until("r1")[-1]["type"] == "done"


def images_of(messages: list[dict]) -> dict[tuple[int, int], bytes]:
    return {(m["layer"], m["seed"]): m["png"] for m in messages if m["type"] == "image"}


def test_clients_share_a_worker_each_with_its_own_model(sd_dir, tmp_path):
    """A warm worker pays no reload for the model it has; a client whose model another client replaced
    gets its own back, transparently; a client that never loaded gets not_loaded."""
    from diffusion_lens.fixtures import tiny_sd_pipeline

    small = tmp_path / "tiny-sd-3"
    tiny_sd_pipeline(num_layers=3).save_pretrained(small)
    log = tmp_path / "worker.log"
    first = Client(stderr=log)
    second, third = first.another(), first.another()
    try:
        for c in (first, second, third):
            c.send(id="h", type="hello", protocol=1, client="pytest")
            assert c.receive()["type"] == "ready"
        assert load(first, sd_dir)["num_layers"] == 5
        first.send(**generate_request("a", layers=[5], seeds=[0]))
        alone = images_of(first.until("a"))
        assert load(second, small)["num_layers"] == 3
        # first's model is 5 layers deep: layer 5 works only if the worker loads it again for first.
        first.send(**generate_request("b", layers=[5], seeds=[0]))
        again = first.until("b")
        assert again[-1]["type"] == "done" and images_of(again) == alone
        second.send(**generate_request("c", layers=[5], seeds=[0]))
        refused = second.until("c")[-1]
        assert refused["code"] == "bad_request" and "out of range 0..3" in refused["message"]
        third.send(**generate_request("d", layers=[0], seeds=[0]))
        assert third.until("d")[-1]["code"] == "not_loaded"
        # The same load as the one loaded is answered at once, with the kept reply and the new id.
        reply = load(second, small, request_id="again")
        assert reply["id"] == "again" and reply["num_layers"] == 3 and reply["model"] == str(small)
        text = first.log_text()
        assert text.count(f"loaded {sd_dir} (sd)") == 2  # first's load, and its model loaded again once
        assert text.count(f"loaded {small} (sd)") == 2  # second's, and again after first's came back
        assert text.count(f"{small} is loaded already") == 1
        # A failed load leaves its client with no model (not its last one).
        assert load(first, sd_dir / "missing")["code"] == "load_failed"
        first.send(**generate_request("e", layers=[0], seeds=[0]))
        assert first.until("e")[-1]["code"] == "not_loaded"
    finally:
        third.close()
        second.close()
        first.close()


def start_worker(*args: str, stderr: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(SERVER), "--heartbeat", "0.5", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if stderr is None else stderr.open("wb"),
    )


def test_load_at_start_keeps_the_model_warm(sd_dir, tmp_path):
    log = tmp_path / "worker.log"
    c = Client(args=("--load", json.dumps(load_fields(sd_dir))), stderr=log)
    try:
        assert c.process.stdout is not None
        assert json.loads(c.process.stdout.readline()) == {
            "event": "loaded",
            "model": str(sd_dir),
            "family": "sd",
            "num_layers": 5,
        }
        c.send(id="h", type="hello", protocol=1, client="pytest")
        assert c.receive()["type"] == "ready"
        loaded = load(c, sd_dir)
        assert loaded["type"] == "loaded" and loaded["num_layers"] == 5
        assert f"{sd_dir} is loaded already" in c.log_text()
        c.send(**generate_request("g", layers=[5], seeds=[0]))
        assert c.until("g")[-1]["type"] == "done"
    finally:
        c.close()


def test_a_bad_load_at_start_is_said_and_ends_the_worker(sd_dir, tmp_path):
    bad = start_worker("--load", json.dumps({**load_fields(sd_dir), "dtype": "fp64"}))
    _, stderr = bad.communicate(timeout=60)
    assert bad.returncode == 2
    assert stderr.decode().strip().splitlines()[-1] == (
        "error: --load: field 'dtype' must be one of auto, fp32, fp16, bf16"
    )
    fields = load_fields(sd_dir)
    del fields["lora"]
    bad = start_worker("--load", json.dumps(fields))
    assert bad.communicate(timeout=60)[1].decode().strip().endswith("error: --load: missing field 'lora'")
    assert bad.returncode == 2
    bad = start_worker("--load", "{model: x}")
    assert "error: --load is not JSON" in bad.communicate(timeout=60)[1].decode() and bad.returncode == 2

    missing = start_worker("--load", json.dumps(load_fields(sd_dir / "missing")))
    stdout, _ = missing.communicate(timeout=120)
    listening, failed = (json.loads(line) for line in stdout.decode().splitlines())
    assert listening["event"] == "listening"
    assert failed["event"] == "load_failed" and failed["message"].startswith("model folder not found")
    assert missing.returncode == 3
