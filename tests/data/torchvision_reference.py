"""Forward parity with torchvision for every torchvision family (run by hand; torchvision is not a dependency).

Step 1, in a virtualenv with torch 2.13.0 and torchvision 0.28.0 (no dlbook needed): writes random-weight
state dicts (BN statistics and layer scales randomised too), a 2x3x64x64 input and torchvision's eval-mode
logits to OUT, and the key/shape lists pinned in tests/data/torchvision_keys.json.gz:
  python tests/data/torchvision_reference.py dump OUT
Step 2, in dlbook's virtualenv: converts each state dict and prints the max-abs logit difference:
  python tests/data/torchvision_reference.py compare OUT [ARCH ...]
"""

import gzip
import json
import os
import sys
import types

ARCHS = ["mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "mnasnet1_0", "densenet121", "densenet201",
         "resnet50", "vgg19", "regnet_x_400mf", "regnet_y_400mf", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5",
         "shufflenet_v2_x2_0", "squeezenet1_1", "convnext_tiny", "efficientnet_v2_s"]


def dump(out):
  sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
  import numpy as np
  import torch
  import torchvision.models as tvm
  torch.manual_seed(0)
  x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
  np.save(os.path.join(out, "input.npy"), x.numpy())
  keys, counts = {}, {}
  for a in ARCHS:
    m = getattr(tvm, a)(weights=None).eval()
    counts[a] = sum(p.numel() for p in m.parameters())
    sd = m.state_dict()
    with torch.no_grad():
      for k, v in sd.items():
        if k.endswith("running_mean"):
          v.copy_(torch.randn_like(v) * 0.1)
        if k.endswith("running_var"):
          v.copy_(torch.rand_like(v) + 0.5)
        if k.endswith("layer_scale"):
          v.copy_(torch.randn_like(v) * 0.1)
      y = m(x).numpy()
    keys[a] = [[k, list(v.shape)] for k, v in sd.items()]
    np.savez(os.path.join(out, f"{a}.npz"), **{k: v.numpy() for k, v in sd.items()})
    np.save(os.path.join(out, f"{a}_out.npy"), y)
  meta = {"source": "torchvision 0.28.0 (torch 2.13.0 CPU), model(weights=None).state_dict(): [key, shape] in "
                    "order; counts = sum of parameters().numel()", "counts": counts, "keys": keys}
  with gzip.open(os.path.join(out, "torchvision_keys.json.gz"), "wt") as f:
    json.dump(meta, f, separators=(",", ":"))


def compare(out, *archs):
  import jax
  import jax.numpy as jnp
  import numpy as np
  from dlbook.models import weights
  x = jnp.asarray(np.load(os.path.join(out, "input.npy")).transpose(0, 2, 3, 1))
  for a in archs or ARCHS:
    p = weights.load_pretrained(a, os.path.join(out, f"{a}.npz"), image_size=64)
    y = np.asarray(jax.jit(lambda v: p.model.apply(v, x, train=False))(p.variables))
    ref = np.load(os.path.join(out, f"{a}_out.npy"))
    print(f"torchvision_parity {a} max_abs={np.abs(y - ref).max():.2e} scale={np.abs(ref).max():.3f}", flush=True)


if __name__ == "__main__":
  {"dump": dump, "compare": compare}[sys.argv[1]](*sys.argv[2:])
