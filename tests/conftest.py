"""Test setup: 8 fake CPU devices, the commands' XLA flags and a persistent compilation cache
(set before JAX starts a backend)."""

import os

from inception_jax import xla_flags

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
# The commands' XLA flags (cli.setup adds them): in-process results must match the commands'
# that tests run as subprocesses (different convolution kernels sum in a different order).
xla_flags.apply()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.expanduser("~/.cache/inception_jax/jax_cache")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")

# torch, triton and torchvision segfault when imported after TensorFlow in one process; the
# suite uses both (timm comparisons, the TFDS pipeline), so the torch stack loads first.
try:
    import timm  # noqa: F401  (imports torch and torchvision)
except ImportError:
    pass
