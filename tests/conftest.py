"""Test setup: 8 fake CPU devices, our XLA flags and a persistent compilation cache (set
before JAX starts a backend)."""

import os

import jaxlib

from inception_jax.xla_flags import with_speed_flags

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ["XLA_FLAGS"] = with_speed_flags(os.environ["XLA_FLAGS"], jaxlib.__version__)
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
