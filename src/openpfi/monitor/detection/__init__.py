"""How the monitor decides to alarm: change detectors on the client-report streams (``cusum.py``,
``bank.py``), item-paired tests of the global model against round 0 (``paired.py``,
``global_change.py``, ``group_gap.py``) and the power of each (``power.py``)."""
