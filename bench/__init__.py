"""tf_lth's benchmark (`make bench`, `python -m bench.run`): speed and size as ratios.

Every figure is measured against a plain-Keras reference timed in the same process, so
the ratios hold on a busy or a quiet machine; `bench/results.json` keeps the raw numbers.
"""
