"""Builds, caches and registers dlbook's C++ CPU kernels (XLA FFI handlers).

The sources sit next to this file. On first use each is compiled with the system's C++ compiler
(`$CXX`, else `g++`, else `c++`) against jaxlib's FFI headers into
`$DLBOOK_KERNEL_CACHE` (default `~/.cache/dlbook/kernels`), under a name that hashes the source, the
flags, the compiler and jaxlib's version, so an edited source or a new jaxlib rebuilds and a cached
library is never stale. The compiler writes to a temporary name that is renamed into place, so parallel
processes (pytest-xdist workers) never load a half-written file. `python -m dlbook.models.kernels`
builds them ahead of time (`.ci/setup` does) and prints where they are.

On x86-64 the kernels are built for AVX2+FMA when the CPU has both (never `-march=native`: a cache in a
shared home directory may be read by older CPUs), otherwise for the baseline instruction set.
`DLBOOK_NATIVE_KERNELS=0` disables them; a missing compiler or a failed build logs one warning and the
ops use their pure-JAX forms, which compute the same values more slowly.
"""

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from typing import Dict, Optional

import jax
from absl import logging

HERE = os.path.dirname(os.path.abspath(__file__))
# library name -> (source file, {FFI target name: exported handler symbol})
KERNELS = {
    "depthwise": ("depthwise.cc", {"dlbook_depthwise_grad": "DlbookDepthwiseGrad"}),
}
_lock = threading.Lock()
_state: Dict[str, Optional[str]] = {}   # library name -> path of the loaded library, or None if unavailable


def cache_dir() -> str:
  return os.environ.get("DLBOOK_KERNEL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "dlbook",
                                                                "kernels")


def enabled() -> bool:
  return os.environ.get("DLBOOK_NATIVE_KERNELS", "1") != "0"


def compiler() -> Optional[str]:
  for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
    if name and shutil.which(name):
      return shutil.which(name)
  return None


def _cpu_flags() -> set:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("flags"):
          return set(line.split(":", 1)[1].split())
  except OSError:
    pass
  return set()


def compile_flags() -> list:
  flags = ["-O3", "-std=c++17", "-shared", "-fPIC", "-w", "-fno-math-errno"]
  if platform.machine() in ("x86_64", "AMD64") and {"avx2", "fma"} <= _cpu_flags():
    flags += ["-mavx2", "-mfma"]
  return flags


def _library_path(name: str, cxx: str) -> str:
  source = os.path.join(HERE, KERNELS[name][0])
  with open(source, "rb") as f:
    digest = hashlib.sha256(f.read())
  version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
  digest.update(repr((compile_flags(), version, jax.__version__, platform.machine())).encode())
  return os.path.join(cache_dir(), f"lib{name}-{digest.hexdigest()[:16]}.so")


def build(name: str) -> str:
  """The path of kernel library `name`, compiled now unless a matching build is cached. Raises
  RuntimeError with the compiler's message when it cannot be built."""
  cxx = compiler()
  if cxx is None:
    raise RuntimeError("no C++ compiler found (set $CXX or install g++)")
  path = _library_path(name, cxx)
  if os.path.exists(path):
    return path
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd, tmp = tempfile.mkstemp(suffix=".so", dir=os.path.dirname(path))
  os.close(fd)
  cmd = [cxx, *compile_flags(), f"-I{jax.ffi.include_dir()}", os.path.join(HERE, KERNELS[name][0]), "-o", tmp]
  proc = subprocess.run(cmd, capture_output=True, text=True)
  if proc.returncode != 0:
    os.unlink(tmp)
    last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
    raise RuntimeError(f"{os.path.basename(cxx)} failed on {KERNELS[name][0]}: {last}")
  os.replace(tmp, path)
  return path


def available(name: str) -> bool:
  """Whether kernel library `name` is built, loaded and its FFI targets registered for the CPU (once
  per process; the first call may compile it, a few seconds)."""
  with _lock:
    if name not in _state:
      _state[name] = None
      if enabled():
        try:
          path = build(name)
          lib = ctypes.cdll.LoadLibrary(path)
          for target, symbol in KERNELS[name][1].items():
            jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
          _state[name] = path
        except (RuntimeError, OSError, AttributeError) as e:
          logging.warning("dlbook native kernel %r unavailable, using its pure-JAX form: %s", name, e)
    return _state[name] is not None
