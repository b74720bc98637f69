"""Cost of `dlbook-stego` on a large cover: the model, Reed-Solomon (compiled and pure Python) and scrypt.

  python -m benchmarks.stego_reveal [--height=3000 --width=4000] [--codecs=creedsolo,reedsolo] [--repeats=1]

A `height`×`width` cover (skimage's astronaut, upscaled) holds the longest message without a
key that fits (one copy, so Reed-Solomon corrects every raw decoder error itself). Prints
`name=value` lines: capacity, the model's hide and reveal time, then for each codec the time
of `payload.pack` and `payload.unpack` on the revealed logits (the frame's own work), and the
scrypt cost per guess at N=2^14 (format 1) and N=2^17 (format 2). Times are wall-clock seconds,
the fastest of `repeats`; `*_cpu_s` is process CPU time, steadier on a shared machine.
"""

import time

import numpy as np
from absl import app, flags

flags.DEFINE_integer("height", 3000, "Cover height (pixels).")
flags.DEFINE_integer("width", 4000, "Cover width (pixels).")
flags.DEFINE_list("codecs", ["creedsolo", "reedsolo"], "Reed-Solomon codecs to time: creedsolo (compiled), "
                  "reedsolo (pure Python).")
flags.DEFINE_integer("repeats", 1, "Timed repeats (the fastest counts).")
FLAGS = flags.FLAGS


def timed(fn, repeats):
  best, best_cpu, out = float("inf"), float("inf"), None
  for _ in range(repeats):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    best, best_cpu = min(best, time.perf_counter() - t), min(best_cpu, time.process_time() - c)
  return out, best, best_cpu


def main(_):
  import creedsolo
  import reedsolo
  import skimage.data
  from PIL import Image
  from dlbook.stego import hider, payload

  model = hider.load_model()
  cover = np.asarray(Image.fromarray(skimage.data.astronaut()).resize((FLAGS.width, FLAGS.height), Image.BICUBIC))
  bits_n = hider.capacity_bits(model, FLAGS.height, FLAGS.width)
  limit = hider.capacity_bytes(model, FLAGS.height, FLAGS.width)
  message = np.random.default_rng(0).integers(32, 127, limit, dtype=np.uint8).tobytes()
  print(f"cover={FLAGS.width}x{FLAGS.height} capacity_bits={bits_n} message_bytes={limit} rs_parity={model.rs_parity}")

  bits = payload.pack(message, bits_n, model.rs_parity)
  tiles = hider.image_tiles(cover)
  stego_tiles, t, c = timed(lambda: model.hide_tiles(tiles, bits.reshape(len(tiles), 64, 64, model.bpp)),
                            FLAGS.repeats)
  print(f"model_hide_s={t:.2f} model_hide_cpu_s={c:.2f}")
  logits, t, c = timed(lambda: model.reveal_tiles(stego_tiles).reshape(-1), FLAGS.repeats)
  print(f"model_reveal_s={t:.2f} model_reveal_cpu_s={c:.2f} raw_bit_errors={int(np.sum((logits > 0) != bits))}")

  real_codec = payload._codec
  modules = {"creedsolo": creedsolo, "reedsolo": reedsolo}
  for name in FLAGS.codecs:
    payload._codec = lambda parity, m=modules[name]: m.RSCodec(parity)  # this benchmark only
    try:
      _, t, c = timed(lambda: payload.pack(message, bits_n, model.rs_parity), FLAGS.repeats)
      print(f"{name}_pack_s={t:.2f} {name}_pack_cpu_s={c:.2f}")
      out, t, c = timed(lambda: payload.unpack(logits), FLAGS.repeats)
      assert out == message
      print(f"{name}_unpack_s={t:.2f} {name}_unpack_cpu_s={c:.2f}")
    finally:
      payload._codec = real_codec

  for log2n in (14, 17):
    _, t, c = timed(lambda: payload.scrypt(b"a passphrase", b"salt" * 4, (log2n, 8, 1), 64), max(3, FLAGS.repeats))
    print(f"scrypt_2^{log2n}_s={t:.3f} scrypt_2^{log2n}_cpu_s={c:.3f}")


if __name__ == "__main__":
  app.run(main)
