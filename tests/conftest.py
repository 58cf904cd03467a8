"""Test setup: 8 fake CPU devices and a persistent XLA compilation cache (set before JAX
starts a backend)."""

import os

# In-process tests run jaxlib's default XLA flags: our CPU flag speeds up large convolutions
# but slows compilation, which is what tiny test models spend their time on. The commands the
# tests start as subprocesses add it themselves (cli.setup), as they do for users.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
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
