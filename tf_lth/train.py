"""`python -m tf_lth.train`: the training command (tf_lth/cli/train.py)."""

from tf_lth.cli.train import run

if __name__ == "__main__":
    run()
