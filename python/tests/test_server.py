"""The worker process end to end over ZeroMQ, from a plain pyzmq DEALER (independent of the TS bridge).
Every message the worker sends, and its listening line, is checked against the protocol's schema."""

from __future__ import annotations

import json
import os
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
    def __init__(self, heartbeat: float = 0.5, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(SERVER), "--heartbeat", str(heartbeat)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=None if env is None else {**os.environ, **env},
        )
        assert self.process.stdout is not None
        self.announcement = json.loads(self.process.stdout.readline())
        Draft202012Validator(protocol.SCHEMA["listening"]).validate(self.announcement)
        self.received: list[dict] = []  # every message, heartbeats included
        self.socket = zmq.Context.instance().socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(self.announcement["endpoint"])

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


def load(
    client: Client, model: Path | str, stage2: Path | None = None, config: Path | None = None, lora=()
) -> dict:
    client.send(
        id="load", type="load", model=str(model), family=None, dtype="auto", device="cpu",
        revision=None, offload="none", allow_pickle=False, variant=None, family_options={},
        stage2=None if stage2 is None else {"model": str(stage2), "revision": None},
        config=None if config is None else str(config), lora=list(lora),
    )  # fmt: skip
    return client.until("load", ("loaded", "error"))[-1]


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
