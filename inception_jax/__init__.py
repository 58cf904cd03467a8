"""inception_jax: Inception-v3/v4 and Inception-ResNet-v1/v2 in JAX/Flax."""

__version__ = "0.1.0"
