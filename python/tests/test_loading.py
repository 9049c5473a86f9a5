"""Loading checkpoints by path: family detection, refusals, clear errors."""

from __future__ import annotations

import inspect
import json
import re
import shutil
from pathlib import Path

import diffusers
import pytest
import torch
from jsonschema import Draft202012Validator

from diffusion_lens.families import FAMILIES, CheckpointError, CheckpointSource, detect_family, load_family
from diffusion_lens.fixtures import save_fixture, tiny_sd_pipeline
from diffusion_lens.schedulers import SCHEDULER_NAMES

from .conftest import load_options


def test_family_is_detected_from_model_index(sd_dir):
    assert detect_family(str(sd_dir)) == "sd"
    family = load_family(load_options(sd_dir), None)
    info = family.describe()
    assert family.num_layers == 5
    assert info["defaults"]["height"] == 32 and info["defaults"]["scheduler"] == "DDIMScheduler"
    assert info["revision"] is None


# The settings of a request and its content key that a family's options sit beside (plan.ts).
SETTINGS_NAMES = {"steps", "guidance", "height", "width", "scheduler", "negative", "seed", "model"}
SETTINGS_NAMES |= {"id", "revision", "family", "dtype", "variant", "files"}


@pytest.mark.parametrize("family", list(FAMILIES.values()), ids=list(FAMILIES))
def test_each_family_declares_valid_options(family):
    """Every options schema is a JSON Schema whose defaults it accepts, of a closed map whose names do
    not shadow a setting of the request; sampling options are arguments of the stock pipeline."""
    for kind, schema in family.options.items():
        Draft202012Validator.check_schema(schema)
        assert schema["additionalProperties"] is False, kind
        assert family.options_problem(kind, family.resolve_options(kind, {}), "family_options") is None
        assert not set(schema["properties"]) & SETTINGS_NAMES, kind
    stock_call = inspect.signature(getattr(diffusers, family.pipeline_classes[0]).__call__).parameters
    assert set(family.options["sample"]["properties"]) <= set(stock_call)
    assert set(family.schedulers) <= set(SCHEDULER_NAMES)
    assert family.stages in (1, 2) and family.guidance in ("cfg", "distilled")


def test_unsupported_pipeline_names_the_supported_ones(sd_dir, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(sd_dir, other)
    index = json.loads((other / "model_index.json").read_text())
    index["_class_name"] = "KandinskyPipeline"
    (other / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(
        ValueError, match=r"'KandinskyPipeline' is not supported; supported: StableDiffusionPipeline"
    ):
        load_family(load_options(other), None)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="model folder not found"):
        load_family(load_options(tmp_path / "nope"), None)


def test_pickled_weights_are_refused_unless_allowed(tmp_path):
    pickled = Path(tmp_path / "pickled")
    tiny_sd_pipeline().save_pretrained(pickled, safe_serialization=False)
    with pytest.raises(Exception, match="safetensors"):
        load_family(load_options(pickled), None)
    family = load_family(load_options(pickled, allow_pickle=True), None)
    assert family.num_layers == 5


def test_a_weight_variant_loads_the_variant_files(tmp_path):
    """`variant: fp16` reads the *.fp16.safetensors copies the hub checkpoints ship (half the download)."""
    folder = tmp_path / "variant"
    pipe = tiny_sd_pipeline()
    pipe.to(torch.float16).save_pretrained(folder, safe_serialization=True, variant="fp16")
    assert list(folder.glob("unet/*.fp16.safetensors"))
    family = load_family(load_options(folder, variant="fp16"), None)
    weight = family.pipe.unet.conv_in.weight  # type: ignore[attr-defined]
    assert torch.equal(weight, pipe.unet.conv_in.weight.to(torch.float32))
    with pytest.raises(Exception, match="bf16"):
        load_family(load_options(folder, variant="bf16"), None)


def test_an_uncached_hub_id_offline_says_how_to_get_it(empty_offline_hub, if_dir):
    expected = (
        r'^cannot reach the Hugging Face hub for "org/name" \(HF_HUB_OFFLINE is set\) and it is not '
        rf"\(fully\) in the local cache \(HF_HOME={re.escape(str(empty_offline_hub))}, looked in .*hub\): "
        r"unset HF_HUB_OFFLINE, connect to the internet and run again to download it, set HF_HOME to a "
        r"cache that has it, or pass a local diffusers checkpoint folder \(with model_index\.json\)$"
    )
    for family in (None, "sd"):
        with pytest.raises(CheckpointError, match=expected):
            load_family(load_options("org/name"), family)
    stage2 = CheckpointSource("org/stage-2", None)
    with pytest.raises(CheckpointError, match='hub for "org/stage-2"'):
        load_family(load_options(if_dir, stage2=stage2), None)


def _raised(error: OSError, cause: BaseException) -> OSError:
    """``error`` raised from ``cause``, as diffusers wraps the hub's errors."""
    try:
        try:
            raise cause
        except BaseException as inner:
            raise error from inner
    except OSError as outer:
        return outer


def test_hub_errors_without_network_are_recognised(monkeypatch):
    """Connection failures of whichever HTTP client the hub uses (by name), and a repo the hub lacks."""
    from diffusers import DiffusionPipeline
    from huggingface_hub import constants
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    class ConnectError(Exception):  # named as httpx's
        pass

    def hub_error(kind: type[Exception]) -> Exception:
        error = kind.__new__(kind)  # the hub's HTTP errors want a live response; the type is what counts
        Exception.__init__(error, "404 Client Error")
        return error

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    cases = [
        (ConnectError("[Errno -2] Name or service not known"), r'hub for "org/name" \(\[Errno -2\] Name or'),
        (ConnectionError("connection refused"), r"connect to the internet and run again to download it"),
        (hub_error(RepositoryNotFoundError), r'"org/name" is neither a local folder nor a model on the'),
        (hub_error(GatedRepoError), r"accept its licence at https://huggingface\.co/org/name and log in"),
    ]
    for cause, expected in cases:
        error = _raised(OSError("org/name does not appear to have a file named model_index.json."), cause)

        def load_config(cls, *args, error=error, **kwargs):
            raise error

        monkeypatch.setattr(DiffusionPipeline, "load_config", classmethod(load_config))
        with pytest.raises(CheckpointError, match=expected) as caught:
            load_family(load_options("org/name"), None)
        assert caught.value.__cause__ is error
    # Anything else keeps diffusers' own message.
    monkeypatch.setattr(
        DiffusionPipeline,
        "load_config",
        classmethod(lambda cls, *a, **k: (_ for _ in ()).throw(OSError("odd"))),
    )
    with pytest.raises(OSError, match=r"^odd$"):
        load_family(load_options("org/name"), None)


def test_pickled_weights_name_the_way_out(tmp_path):
    pickled = save_fixture("sd", tmp_path / "pickled", safe_serialization=False)
    assert list(pickled.glob("unet/*.bin")) and not list(pickled.glob("unet/*.safetensors"))
    with pytest.raises(CheckpointError) as caught:
        load_family(load_options(pickled), None)
    assert str(caught.value) == (
        f"{pickled} has pickled weights with no safetensors copy (unet/diffusion_pytorch_model.bin, "
        "vae/diffusion_pytorch_model.bin), and only safetensors load by default, since loading a pickle "
        "can run code: if you trust this checkpoint, pass --allow-pickle (config: model.allow_pickle: true) "
        "to load pickled weights"
    )
    assert load_family(load_options(pickled, allow_pickle=True), None).num_layers == 5


def test_a_folder_of_single_files_says_to_pass_the_file(tmp_path):
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(2)}, tmp_path / "model.safetensors")
    (tmp_path / "sd15.ckpt").write_bytes(b"not really a pickle")
    (tmp_path / "notes.txt").write_text("a file")
    with pytest.raises(
        CheckpointError,
        match=r"has no model_index\.json.*holds model\.safetensors, sd15\.ckpt: pass a single-file "
        r"checkpoint itself, not its folder$",
    ):
        load_family(load_options(tmp_path), None)
    with pytest.raises(CheckpointError, match=r"notes\.txt is a file, not a diffusers checkpoint folder"):
        load_family(load_options(tmp_path / "notes.txt"), None)


def test_a_missing_local_path_is_named(tmp_path, monkeypatch, empty_offline_hub):
    """Paths, not hub ids: a relative path with two slashes, or to a weight file, too."""
    missing = tmp_path / "nope"
    with pytest.raises(CheckpointError, match=rf"^model folder not found: {re.escape(str(missing))}$"):
        load_family(load_options(missing), None)
    monkeypatch.chdir(tmp_path)
    for relative in ("./nope", "checkpoints/sd/v1", "nope/model.safetensors"):
        absolute = re.escape(str(tmp_path / relative.removeprefix("./")))
        with pytest.raises(CheckpointError, match=rf"not found: {re.escape(relative)} \({absolute} does not"):
            load_family(load_options(relative), None)


def test_a_hub_checkpoint_without_safetensors_names_the_way_out(monkeypatch):
    """diffusers refuses it from the hub's file list, before any download (simulated here)."""
    from diffusers import DiffusionPipeline, StableDiffusionPipeline

    index = {"_class_name": "StableDiffusionPipeline"}
    monkeypatch.setattr(DiffusionPipeline, "load_config", classmethod(lambda cls, *a, **k: index))
    refusal = OSError("Could not find the necessary `safetensors` weights in ['unet/x.bin'] (variant=fp16)")

    def from_pretrained(cls, *args, **kwargs):
        raise refusal

    monkeypatch.setattr(StableDiffusionPipeline, "from_pretrained", classmethod(from_pretrained))
    with pytest.raises(CheckpointError, match=r"^org/name has no safetensors weights \(fp16 variant\), and"):
        load_family(load_options("org/name", variant="fp16"), None)


def test_auto_dtype_is_the_familys_on_an_accelerator():
    """fp16 on a GPU, bf16 for families that overflow in fp16 (Flux); fp32 on the CPU always."""
    from diffusion_lens.devices import resolve_dtype

    assert resolve_dtype("auto", "cuda") == torch.float16
    assert resolve_dtype("auto", "cuda", FAMILIES["flux"].accelerator_dtype) == torch.bfloat16
    assert resolve_dtype("auto", "cpu", FAMILIES["flux"].accelerator_dtype) == torch.float32
    assert resolve_dtype("fp16", "cuda", "bf16") == torch.float16
