"""The pieces of ``tools/reproduce.py``: one module per job.

- :mod:`_reproduce.timing`: wall, CPU and memory cost of every stage;
- :mod:`_reproduce.experiments`: the experiments on one evaluation set
  (scores once, then every table's numbers);
- :mod:`_reproduce.tables`: the Markdown tables;
- :mod:`_reproduce.charts`: the PNG charts (Pillow only).

They use only the public API of :mod:`anomclust_lite`.
"""
