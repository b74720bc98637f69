"""Hand-written CPU kernels for the layers XLA:CPU differentiates slowly (C++ behind JAX's FFI).

- `native`: compiles the C++ sources once per machine into a cache, loads them and registers their
  XLA FFI targets; without a C++ compiler (or with `DLBOOK_NATIVE_KERNELS=0`) nothing is registered and
  every op falls back to its pure-JAX form.
- `depthwise`: a depthwise convolution whose backward pass runs the native kernel on the CPU and JAX's
  own differentiation elsewhere (GPUs, TPUs, other dtypes).
"""
