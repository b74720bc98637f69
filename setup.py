"""dlbook: the methods of *Advances in Deep Learning, Vol. 2* in JAX."""

import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def requirements():
  """The runtime section of requirements.txt: everything above its `# Tests` line."""
  with open(os.path.join(HERE, "requirements.txt")) as f:
    text = f.read().split("\n# Tests", 1)[0]
  lines = [l.split("#")[0].strip() for l in text.splitlines()]
  return [l for l in lines if l]


setup(
    name="dlbook",
    version="0.1.0",
    description="JAX implementations of Advances in Deep Learning, Vol. 2: NAS, selective freezing, GANs, "
                "GAN steganography and medical pipelines",
    python_requires=">=3.11",
    packages=find_packages(include=["dlbook", "dlbook.*", "experiments", "configs"]),
    package_data={"dlbook": ["assets/**/*", "models/kernels/*.cc"]},   # C++ sources: built on first use
    include_package_data=True,
    install_requires=requirements(),
    extras_require={
        "tfds": ["tensorflow-datasets==4.9.10"],
        "test": ["pytest==9.2.0"],
        "bench": ["torch==2.13.0"],
    },
    entry_points={"console_scripts": [
        "dlbook-train=experiments.train:cli",
        "dlbook-stego=dlbook.stego.cli:main",
    ]},
)
