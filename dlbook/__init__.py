"""dlbook: the methods of *Advances in Deep Learning, Vol. 2* in JAX."""

__version__ = "0.1.0"
