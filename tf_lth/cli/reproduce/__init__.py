"""`python -m tf_lth.reproduce` (`make reproduce`): the paper's experiments, re-run and reported.

One stage a module, in the order they run: `paper` (the paper's numbers, presets and
budgets), `plan` (the sub-runs and their time estimates), `execute` (each sub-run as a
subprocess, resumable, with progress for the whole plan), `claims` (results read back and
each claim's rule), `report` (RESULTS.md; its figures are drawn by `tf_lth.plot`) and `cli`
(the command; its help says what it does). Nothing here imports TensorFlow: the training
happens in the subprocesses.
"""

import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
