"""Ablations of the prompt's conditioning (README "Ablations"), applied to what the family gives at each
layer, before sampling:

- ``tokens``: which positions of ``prompt_embeds`` (its sequence axis) follow the layer; the others take
  the stock layer's. ``all`` (no ablation), ``prompt`` (the prompt's tokens through its end-of-sequence
  token; the padding after it from the stock layer), ``padding`` (the reverse), or one position.
- ``mix``: layer ``a``'s conditioning moved ``alpha`` of the way to layer ``b``'s, every argument of the
  stock call that is a float tensor (``torch.lerp``: exactly ``a``'s at 0 and ``b``'s at 1). Items are
  layer ``a``.
- ``embeds``: tensors from a safetensors file that replace the arguments of their names
  (``prompt_embeds``, ``pooled_prompt_embeds``, ...); the others stay as the lens gives them.

They change the prompt's branch only; the unconditional branch follows ``uncond`` alone. ``mix`` and
``tokens`` combine (the mix, then the positions); ``embeds`` combines with neither.

The embeds file: one tensor per argument, batch dimension first. One row serves every prompt; several
rows need ``__metadata__["prompts"]``, a JSON list of the prompt of each row (``save_embeds`` writes it).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from .families import Embeds, Family

TOKEN_WINDOWS = ("all", "prompt", "padding")
Tokens = str | int


class AblationError(ValueError):
    """An ablation that cannot be applied to this request (named by its field)."""


@dataclass(frozen=True)
class Mix:
    layers: tuple[int, int]
    alpha: float


@dataclass(frozen=True)
class InjectedEmbeds:
    """The tensors of an embeds file: by argument name, (rows, ...); the prompt of each row, or None for a
    single row that serves every prompt; the sha256 of the file's bytes (in the images' keys)."""

    tensors: dict[str, torch.Tensor]
    prompts: tuple[str, ...] | None
    sha256: str

    def row(self, prompt: str) -> dict[str, torch.Tensor]:
        if self.prompts is None:
            return {name: tensor[:1] for name, tensor in self.tensors.items()}
        if prompt not in self.prompts:
            raise AblationError(f"embeds: the file has no row for the prompt {prompt!r}")
        index = self.prompts.index(prompt)
        return {name: tensor[index : index + 1] for name, tensor in self.tensors.items()}


def parse_embeds(data: bytes, where: str = "embeds") -> InjectedEmbeds:
    """An embeds file's bytes, checked: safetensors, at least one tensor, rows matching the metadata."""
    try:
        tensors = load_safetensors(data)
        header_size = int.from_bytes(data[:8], "little")
        metadata = json.loads(data[8 : 8 + header_size]).get("__metadata__") or {}
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types on garbage
        raise AblationError(f"{where}: not a safetensors file ({exc})") from None
    if not tensors:
        raise AblationError(f"{where}: the file holds no tensors")
    prompts = None
    if "prompts" in metadata:
        try:
            listed = json.loads(metadata["prompts"])
        except json.JSONDecodeError:
            listed = None
        if not isinstance(listed, list) or not listed or not all(isinstance(p, str) for p in listed):
            raise AblationError(f'{where}: metadata "prompts" must be a JSON list of prompt strings')
        if len(set(listed)) != len(listed):
            raise AblationError(f'{where}: metadata "prompts" lists a prompt twice')
        prompts = tuple(listed)
    rows = 1 if prompts is None else len(prompts)
    for name, tensor in tensors.items():
        if tensor.dim() < 1 or tensor.shape[0] != rows:
            what = (
                "one row (no prompts metadata)" if prompts is None else f"{rows} rows, one per listed prompt"
            )
            raise AblationError(f"{where}: tensor {name!r} has shape {tuple(tensor.shape)}; expected {what}")
    return InjectedEmbeds(tensors, prompts, hashlib.sha256(data).hexdigest())


def read_embeds(path: str | Path, sha256: str | None = None) -> InjectedEmbeds:
    """An embeds file; with ``sha256``, refused unless its bytes are the ones the orchestrator hashed (the
    images' keys carry that hash)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise AblationError(f"embeds.path: cannot read {path} ({exc.strerror or exc})") from None
    embeds = parse_embeds(data, f"embeds ({path})")
    if sha256 is not None and embeds.sha256 != sha256:
        raise AblationError(
            f"embeds: {path} has changed since it was checked (sha256 {embeds.sha256[:12]}…, expected "
            f"{sha256[:12]}…); run again"
        )
    return embeds


def embeds_bytes(per_prompt: Mapping[str, Embeds] | Embeds) -> bytes:
    """The embeds file of ``per_prompt`` ({prompt: {argument: (1, ...) tensor}}, one row per prompt), or
    of one set of arguments ({argument: tensor}) that serves every prompt."""
    values = list(per_prompt.values())
    if values and all(isinstance(value, torch.Tensor) for value in values):
        tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in per_prompt.items()}
        return save_safetensors(tensors)  # type: ignore[arg-type]
    if not values or not all(isinstance(value, Mapping) for value in values):
        raise ValueError("embeds must map argument names to tensors, or prompts to such maps")
    prompts = list(per_prompt)
    names = set(values[0])
    if any(set(value) != names for value in values):
        raise ValueError("every prompt's embeds must name the same arguments")
    tensors = {
        name: torch.cat([per_prompt[prompt][name].detach().cpu() for prompt in prompts]).contiguous()  # type: ignore[index]
        for name in sorted(names)
    }
    return save_safetensors(tensors, metadata={"prompts": json.dumps(prompts)})


def save_embeds(path: str | Path, per_prompt: Mapping[str, Embeds] | Embeds) -> Path:
    """Writes an embeds file (``embeds_bytes``) that ``lens(embeds=...)`` and the CLI's ``lens.embeds``
    take, e.g. a prompt's conditioning from ``return_embeddings=True``, edited."""
    path = Path(path)
    path.write_bytes(embeds_bytes(per_prompt))
    return path


@dataclass(frozen=True)
class Ablation:
    tokens: Tokens = "all"
    mix: Mix | None = None
    embeds: InjectedEmbeds | None = field(default=None, repr=False)

    def encoded_layers(self, layers: Sequence[int], stock: int) -> list[int]:
        """The layers whose conditioning the ablated ``layers`` are made from."""
        needed = set(self.mix.layers) if self.mix is not None else set(layers)
        if self.tokens != "all":
            needed.add(stock)
        return sorted(needed)

    def problem(self, family: Family, item_layers: Sequence[int]) -> str | None:
        """Why this ablation cannot be applied to items at ``item_layers`` of ``family``, or None."""
        tokens = self.tokens
        if isinstance(tokens, bool) or not isinstance(tokens, str | int):
            return f"tokens must be one of {', '.join(TOKEN_WINDOWS)} or a position, not {tokens!r}"
        if isinstance(tokens, str) and tokens not in TOKEN_WINDOWS:
            return f"tokens must be one of {', '.join(TOKEN_WINDOWS)} or a position, not {tokens!r}"
        if isinstance(tokens, int):
            positions = len(family.tokens(""))
            if not 0 <= tokens < positions:
                return (
                    f"tokens = {tokens} is not a position of this model's prompt_embeds (0..{positions - 1})"
                )
        if self.mix is not None:
            last = family.num_layers
            first, second = self.mix.layers
            for index, layer in enumerate(self.mix.layers):
                if not 0 <= layer <= last:
                    return f"mix.layers[{index}] = {layer} is out of range 0..{last}"
            if first == second:
                return f"mix.layers are both {first}: mix two different layers"
            if not (math.isfinite(self.mix.alpha) and 0 <= self.mix.alpha <= 1):
                return f"mix.alpha = {self.mix.alpha!r} is out of range 0..1"
            other = next((layer for layer in item_layers if layer != first), None)
            if other is not None:
                return f"an item is layer {other}, but with mix every item is layer mix.layers[0] = {first}"
        if self.embeds is not None and (self.mix is not None or tokens != "all"):
            return "embeds replaces the conditioning: it combines with neither mix nor tokens"
        return None

    def positions(self, tokens: Sequence[str | None]) -> list[int]:
        """The positions that follow the layer, given the prompt's ``Family.tokens``."""
        if isinstance(self.tokens, int):
            return [self.tokens]
        keep = {"all": lambda token: True, "prompt": lambda token: token is not None}.get(
            self.tokens, lambda token: token is None
        )
        return [position for position, token in enumerate(tokens) if keep(token)]

    def apply(
        self, family: Family, prompt: str, states: Mapping[int, Embeds], layers: Sequence[int]
    ) -> dict[int, Embeds]:
        """The ablated conditioning of ``prompt`` at ``layers``, from its ``states`` at
        ``encoded_layers``."""
        follow = None
        if self.tokens != "all":
            stock = states[family.stock_layer]["prompt_embeds"]
            tokens = family.tokens(prompt)
            if len(tokens) != stock.shape[1]:
                raise RuntimeError(
                    f"{family.name}: {len(tokens)} token positions for a prompt_embeds of {stock.shape[1]}"
                )
            follow = torch.zeros(len(tokens), dtype=torch.bool, device=stock.device)
            follow[self.positions(tokens)] = True
            follow = follow[None, :, None]
        ablated: dict[int, Embeds] = {}
        for layer in layers:
            embeds = dict(self._mixed(states) if self.mix is not None else states[layer])
            if follow is not None:
                embeds["prompt_embeds"] = torch.where(follow, embeds["prompt_embeds"], stock)
            if self.embeds is not None:
                embeds |= _injected(self.embeds.row(prompt), embeds)
            ablated[layer] = embeds
        return ablated

    def _mixed(self, states: Mapping[int, Embeds]) -> Embeds:
        assert self.mix is not None
        first, second = (states[layer] for layer in self.mix.layers)
        return {
            name: torch.lerp(tensor, second[name], self.mix.alpha) if tensor.is_floating_point() else tensor
            for name, tensor in first.items()
        }


def _injected(row: Mapping[str, torch.Tensor], embeds: Embeds) -> Embeds:
    """The file's tensors for one prompt, checked against the arguments the lens gives and cast to them."""
    for name, tensor in row.items():
        if name not in embeds:
            raise AblationError(
                f"embeds: tensor {name!r} is not an argument of this model's conditioning; its arguments "
                f"are {', '.join(sorted(embeds))}"
            )
        if tensor.shape[1:] != embeds[name].shape[1:]:
            raise AblationError(
                f"embeds: tensor {name!r} has rows of shape {tuple(tensor.shape[1:])}; this model's "
                f"{name} has {tuple(embeds[name].shape[1:])}"
            )
    return {
        name: tensor.to(dtype=embeds[name].dtype, device=embeds[name].device) for name, tensor in row.items()
    }


NO_ABLATION = Ablation()
