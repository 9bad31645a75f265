"""ComfyUI custom node: ESC checkpoints in the stock "Load Upscale Model" node.

ComfyUI loads upscale models through spandrel, which does not know ESC; importing this file adds ESC to
spandrel's registry (esc.spandrel.install), so ESC, ESC-light, ESC-FP, ESC-Real, the XL models and FlashBias
files in models/upscale_models/ open there and run in "Upscale Image (using Model)". It adds no node of its own.
Setup: scripts/comfyui/README.md.
"""
try:
    import esc.spandrel
except ImportError as exc:  # ComfyUI prints this line and carries on without ESC
    raise ImportError(f'ESC for ComfyUI needs the esc-sr package in ComfyUI\'s Python ({exc}); '
                      'see scripts/comfyui/README.md') from None

esc.spandrel.install()

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
