# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # Steganography: hide a message in a picture and reveal it with the shipped model
#
# dlbook ships a small trained convolutional hiding model (`dlbook/assets/stego/default`, 40k parameters,
# 1 bit per pixel on 64x64 tiles) and the `dlbook-stego` tool that uses it (the user-facing side of the
# book's steganography chapters, ch. 6-8). The message is framed, Reed-Solomon coded and, with a key,
# encrypted and scattered by the key before the model embeds it. Nothing is trained here.
#
# In a terminal the same steps are
# `dlbook-stego hide --cover cover.png --message-file note.txt --out stego.png --key-file key.txt` and
# `dlbook-stego reveal --image stego.png --key-file key.txt`; this notebook calls the tool's
# `dlbook.stego.cli.run` with the same arguments, then the library functions underneath to show the images.

# %% tags=["colab-setup"]
# Colab only (CI skips this cell): install dlbook and the JAX build for the runtime's accelerator.
DLBOOK_REPO = "https://github.com/YOUR_ORG/dlbook.git"
# !git clone --depth 1 {DLBOOK_REPO} /content/dlbook
# %cd /content/dlbook
# !pip install -q -e .
# !pip install -q -U "jax[cuda12]"  # GPU runtime; on a TPU runtime: pip install -q -U "jax[tpu]"

# %%
import json
import os
import tempfile

import jax
import matplotlib.pyplot as plt
import numpy as np
import skimage.data
from PIL import Image

print("backend:", jax.default_backend())

# %% [markdown]
# ## The shipped model
# `config.json` holds the architecture and the figures measured on held-out tiles when it was exported.

# %%
from dlbook.stego import cli, hider

model = hider.load_model()  # the default: the model shipped in the package
print(model.path)
print(json.dumps(model.meta, indent=1))

# %% [markdown]
# ## A cover, a message and a key
# Any 8-bit PNG works; here scikit-image's cat photo (451x300 pixels: 7x4 tiles of 64x64, the right and
# bottom remainders are copied unchanged). The key file's first line is the passphrase.

# %%
workdir = tempfile.mkdtemp(prefix="dlbook_stego_")
paths = {name: os.path.join(workdir, name) for name in ("cover.png", "stego.png", "note.txt", "key.txt",
                                                        "revealed.txt")}
cover = skimage.data.chelsea()
Image.fromarray(cover).save(paths["cover.png"])
message = "Meet at the old bridge at 7. Bring the map. (hidden by dlbook's shipped model)".encode()
with open(paths["note.txt"], "wb") as f:
  f.write(message)
with open(paths["key.txt"], "w") as f:
  f.write("correct horse battery staple\n")
assert cli.run(["capacity", "--cover", paths["cover.png"]]) == 0

# %% [markdown]
# ## Hide, then reveal, with the tool
# Exit status 0 is success; `reveal` exits 1 when it finds no message (for example without the key).

# %%
status = cli.run(["hide", "--cover", paths["cover.png"], "--message-file", paths["note.txt"],
                  "--out", paths["stego.png"], "--key-file", paths["key.txt"]])
assert status == 0, status
status = cli.run(["reveal", "--image", paths["stego.png"], "--key-file", paths["key.txt"],
                  "--out", paths["revealed.txt"]])
assert status == 0, status
with open(paths["revealed.txt"], "rb") as f:
  revealed = f.read()
print("revealed:", revealed.decode())
assert revealed == message, (revealed, message)
assert cli.run(["reveal", "--image", paths["stego.png"], "--no-key"]) == cli.EXIT_NO_MESSAGE
assert cli.run(["reveal", "--image", paths["cover.png"], "--key-file", paths["key.txt"]]) == cli.EXIT_NO_MESSAGE

# %% [markdown]
# ## What the model changed
# The same steps with the library's arrays: `hider.hide_image` and `hider.reveal_image` (what the tool
# calls), and `reveal_tiles`, the model's bit logits per pixel. Hiding twice gives different pixels (a
# random nonce per image) that carry the same message. The difference image is amplified 20x.

# %%
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

key = "correct horse battery staple"
stego = np.asarray(Image.open(paths["stego.png"]).convert("RGB"))  # the tool's output
assert hider.reveal_image(model, stego, key) == message
again = hider.hide_image(model, cover, message, key)
assert hider.reveal_image(model, again, key) == message and not np.array_equal(again, stego)
rows, cols = hider.tile_grid(*cover.shape[:2])
bits = model.reveal_tiles(hider.image_tiles(stego))[..., 0] > 0  # [tiles, 64, 64]
bit_map = bits.reshape(rows, cols, 64, 64).transpose(0, 2, 1, 3).reshape(rows * 64, cols * 64)
diff = np.abs(stego.astype(int) - cover.astype(int))
print(f"PSNR {peak_signal_noise_ratio(cover, stego):.1f} dB, SSIM "
      f"{structural_similarity(cover, stego, channel_axis=-1):.3f}, max pixel change {diff.max()}, "
      f"remainder unchanged: {np.array_equal(stego[rows * 64:], cover[rows * 64:])}")
fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
for ax, image, title in zip(axes, (cover, stego, np.clip(20 * diff, 0, 255).astype(np.uint8), bit_map),
                            ("cover", "stego", "|stego - cover| x 20", "revealed bits (encrypted frame)")):
  ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
  ax.set_title(title)
  ax.axis("off")
plt.show()
assert peak_signal_noise_ratio(cover, stego) > 30
