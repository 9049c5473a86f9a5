"""A synthetic "shapes" world with known ground truth, for measuring Diffusion Lens exactly.

- ``world``: the finite grammar of scenes, their prompts, the train / held-out split, the vocabulary;
- ``render``: exact images of scenes (flat palette colours on white);
- ``scorer``: which of a prompt's attributes an image shows, from its pixels only.

Import from the modules (``from diffusion_lens.shapes.render import render``); the package re-exports
nothing, so ``diffusion_lens.shapes.render`` is always the module.
"""
