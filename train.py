"""Train an Inception network: python train.py --config=configs/NAME.py[:smoke] --workdir=DIR.

Rerunning the same command in the same workdir resumes from the newest checkpoint. The
command lives in the package (`inception_jax/train_cli.py`, also `python -m
inception_jax.train_cli`), so that sweeps and installed copies run the same code.
"""

from inception_jax import train_cli

if __name__ == "__main__":
    train_cli.run()
