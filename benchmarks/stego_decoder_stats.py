"""What the shipped model's decoder reads from clean and from keyed stego images, without any key.

  python -m benchmarks.stego_decoder_stats [--crops=40] [--seed=0]

Random 64×128 crops of skimage's photographs, each as it is and with a 30-byte message hidden
with a key (format 2). For each image: the fraction of decoded bits that are 1 and the mean
|logit| of the decoder (the public model, no key involved). Prints `name=value` lines with the
mean, minimum and maximum over the crops. This is what the key does not hide: the frame cannot
be found or parsed without the key, but the decoder's confidence shows that something is there.
"""

import numpy as np
from absl import app, flags

flags.DEFINE_integer("crops", 40, "Number of random crops.")
flags.DEFINE_integer("seed", 0, "Seed of the crops and messages.")
FLAGS = flags.FLAGS


def main(_):
  from dlbook.data import covers
  from dlbook.stego import hider, payload

  rng = np.random.default_rng(FLAGS.seed)
  photos = [covers.to_rgb_uint8(load()) for name, load in covers.PHOTOS.items() if name not in ("china", "flower")]
  photos = [p for p in photos if p.shape[0] >= 64 and p.shape[1] >= 128]
  model = hider.load_model()
  rows = {"clean": [], "keyed": []}
  for _ in range(FLAGS.crops):
    image = photos[rng.integers(len(photos))]
    y, x = rng.integers(0, image.shape[0] - 63), rng.integers(0, image.shape[1] - 127)
    crop = np.ascontiguousarray(image[y:y + 64, x:x + 128])
    stego = hider.hide_image(model, crop, rng.bytes(30), "a passphrase")
    for name, picture in (("clean", crop), ("keyed", stego)):
      logits = model.reveal_tiles(hider.image_tiles(picture)).reshape(-1)
      rows[name].append((np.mean(logits > 0), np.mean(np.abs(logits))))
  for name, values in rows.items():
    ones, confidence = np.asarray(values).T
    print(f"{name}_ones_fraction={ones.mean():.3f} min={ones.min():.3f} max={ones.max():.3f}")
    print(f"{name}_mean_abs_logit={confidence.mean():.2f} min={confidence.min():.2f} max={confidence.max():.2f}")
  print(f"crops={FLAGS.crops} size=64x128 scrypt_log2n={payload.KDF_PARAMS[0]}")


if __name__ == "__main__":
  app.run(main)
