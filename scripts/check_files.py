"""Open a Flick checkpoint with `safetensors` and a GIF with Pillow; check what they hold.

usage: check_files.py MODEL.safetensors CLIP.gif FRAMESxHEIGHTxWIDTH
"""
import json
import sys

from PIL import Image
from safetensors import safe_open

model, gif, size = sys.argv[1], sys.argv[2], sys.argv[3]
frames, height, width = (int(v) for v in size.split("x"))

with safe_open(model, framework="numpy") as f:
    meta = f.metadata()
    names = list(f.keys())
    assert meta["format"] == "flick/1", meta
    config = json.loads(meta["config"])
    assert "blocks.0.attn.q.weight" in names, names[:10]
    w = f.get_tensor("blocks.0.attn.q.weight")
    assert w.shape == (config["dim"], config["dim"]), w.shape
    total = sum(f.get_tensor(n).size for n in names)
print(f"safetensors ok: {len(names)} tensors, {total} parameters, kind={meta['kind']}, dim={config['dim']}")

im = Image.open(gif)
assert im.format == "GIF", im.format
assert im.n_frames == frames, (im.n_frames, frames)
assert im.size == (width, height), im.size
print(f"gif ok: {im.n_frames} frames of {im.size[0]}x{im.size[1]}")
