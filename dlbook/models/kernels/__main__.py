"""python -m dlbook.models.kernels: builds (or finds cached) every native kernel and prints its path;
exits 1 if one is unavailable (the warning above says why)."""

import os
import sys

from dlbook.models.kernels import native


def main() -> int:
  ok = True
  for name in native.KERNELS:
    if native.available(name):
      print(f"{name}: {native.build(name)}")
    else:
      ok = False
      print(f"{name}: unavailable (DLBOOK_NATIVE_KERNELS={os.environ.get('DLBOOK_NATIVE_KERNELS', '1')})")
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
