"""`python -m tf_lth.tune`: hyperparameter search (tf_lth/cli/tune.py)."""

from tf_lth.cli.tune import run

if __name__ == "__main__":
    run()
