"""Evaluation of a trained steganography system on a whole split (book §6.2.2, §8.3.2).

`embed_split` hides fresh random messages in every cover of a split, rounds the stego image to 8
bits as a saved PNG would be, and reads the messages back; `image_metrics` turns that into PSNR,
SSIM, capacity and extraction accuracy; `xunet_pairs` makes the cover/stego pairs of the independent
XuNet security test.
"""

import functools
from typing import Optional, Tuple

import jax
import numpy as np

from dlbook.data import pipeline
from dlbook.metrics import image as im
from dlbook.stego import lsb, xunet
from dlbook.stego.settings import Settings
from dlbook.stego.steps import StegoState, make_embed_fn, sample_messages


@functools.lru_cache(maxsize=8)
def _jitted_embed(message_bits: Tuple[int, ...]):
  return jax.jit(make_embed_fn(message_bits))


def embed_split(s: Settings, split_images, state: Optional[StegoState], key, bits_per_message) -> dict:
  """8-bit covers and stego images of a whole split, with the messages and decoded bits.

  LSB embeds into the 8-bit cover directly; the GANs embed into the float cover and the
  stego image is rounded to 8 bits before it is decoded (as a saved PNG would be).
  """
  bs = s.eval_batch_size
  split = pipeline.Split(split_images, np.zeros(len(split_images), np.int32))
  out = {"cover": [], "stego": [], "bits": [[] for _ in bits_per_message], "decoded": [[] for _ in bits_per_message],
         "cover_logits": [], "stego_logits": []}
  embed = None if state is None else _jitted_embed(tuple(int(b) for b in bits_per_message))
  for i, batch in enumerate(pipeline.eval_batches(split, bs)):
    keep = batch["mask"] > 0
    k = jax.random.fold_in(key, i)
    if state is None:
      cover8 = im.to_uint8(batch["image"])
      bits = jax.device_get(sample_messages(k, bs, bits_per_message))
      stego8 = cover8
      decoded = []
      for j, b in enumerate(bits):  # each receiver's message at its own key, bits after the previous ones
        stego8 = lsb.embed(stego8, np.asarray(b), seed=s.lsb_key + j)
      for j, b in enumerate(bits):
        decoded.append(lsb.extract(stego8, len(b[0]), seed=s.lsb_key + j))
      r = {"cover": cover8, "stego": stego8, "bits": bits, "decoded": decoded}
    else:
      r = jax.device_get(embed(state, batch["image"], k))
      r["cover"], r["stego"] = im.to_uint8(r["cover"]), im.to_uint8(r["stego"])
      out["cover_logits"].append(r["cover_logits"][keep])
      out["stego_logits"].append(r["stego_logits"][keep])
    out["cover"].append(r["cover"][keep])
    out["stego"].append(r["stego"][keep])
    for j in range(len(bits_per_message)):
      out["bits"][j].append(np.asarray(r["bits"][j])[keep])
      out["decoded"][j].append(np.asarray(r["decoded"][j])[keep])
  cat = lambda xs: np.concatenate(xs) if xs else None
  return {"cover": cat(out["cover"]), "stego": cat(out["stego"]),
          "bits": [cat(b) for b in out["bits"]], "decoded": [cat(d) for d in out["decoded"]],
          "cover_logits": cat(out["cover_logits"]), "stego_logits": cat(out["stego_logits"])}


def image_metrics(result: dict, bits_per_message) -> dict:
  """PSNR / SSIM on the 8-bit images (mean ± std over images), extraction accuracy per
  receiver, the in-training steganalyzer's error, and the book-style PSNR variants."""
  cover, stego = result["cover"], result["stego"]
  psnr = np.asarray(im.psnr(cover, stego, data_range=255.0, per_image=True), np.float64)
  ssim = np.asarray(im.ssim(cover, stego, data_range=255.0, per_image=True), np.float64)
  finite = np.isfinite(psnr)
  m = {"num_test_images": int(len(cover)), "psnr": float(np.mean(psnr[finite])) if finite.any() else float("inf"),
       "psnr_std": float(np.std(psnr[finite])) if finite.any() else 0.0,
       "psnr_identical_images": int((~finite).sum()),
       "ssim": float(np.mean(ssim)), "ssim_std": float(np.std(ssim)),
       "bits_per_message": [int(b) for b in bits_per_message],
       "payload_bpp_measured": im.bits_per_pixel(int(sum(bits_per_message)), cover.shape[1], cover.shape[2])}
  accs = [im.extraction_accuracy(b, d) for b, d in zip(result["bits"], result["decoded"])]
  m["extraction_accuracy"] = float(np.mean(accs)) * 100.0
  for i, a in enumerate(accs):
    m[f"extraction_accuracy_{i + 1}"] = a * 100.0
  # Book-style figures (docs/stego.md): the same MSE with MAX = 255 but images scaled to
  # [0, 1] (adds 20·log10(255) = 48.13 dB), or to [-1, 1] (adds 42.11 dB).
  mse01 = np.mean(((cover.astype(np.float64) - stego.astype(np.float64)) / 255.0) ** 2, axis=(1, 2, 3))
  ok = mse01 > 0
  m["psnr_book_style_max255_unit_range"] = float(np.mean(10 * np.log10(255.0 ** 2 / mse01[ok]))) if ok.any() else None
  m["psnr_book_style_max255_symmetric_range"] = (float(np.mean(10 * np.log10(255.0 ** 2 / (4 * mse01[ok]))))
                                                 if ok.any() else None)
  if result.get("cover_logits") is not None:
    labels = np.concatenate([np.ones(len(cover)), np.zeros(len(cover))])
    preds = np.concatenate([result["cover_logits"] > 0, result["stego_logits"] > 0])
    m["steganalyzer_error"] = im.steganalysis_error_rate(labels, preds)
  return m


def xunet_pairs(s: Settings, dataset, state, bits_per_message) -> dict:
  """Cover/stego uint8 pairs for the §8.3.2 protocol scaled to the data (see `xunet.pair_split`).
  Stego images use fresh messages, independent of those used in training and evaluation."""
  n_train, n_val, n_test = xunet.pair_split(len(dataset.train), len(dataset.test), s.xunet.limits)
  order = np.random.default_rng([s.seed, 31]).permutation(len(dataset.train))
  key = jax.random.key(s.seed + 104729)
  out = {}
  for name, images, k in (("train", dataset.train.images[order[:n_train]], 0),
                          ("val", dataset.train.images[order[n_train:n_train + n_val]], 1),
                          ("test", dataset.test.images[:n_test], 2)):
    r = embed_split(s, images, state, jax.random.fold_in(key, k), bits_per_message)
    out[f"{name}_cover"], out[f"{name}_stego"] = r["cover"], r["stego"]
  return out
