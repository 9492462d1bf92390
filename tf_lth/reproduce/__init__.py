"""`python -m tf_lth.reproduce`: the paper re-run (tf_lth/cli/reproduce/)."""
