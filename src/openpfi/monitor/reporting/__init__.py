"""report.json and report.html (``report.py``, ``html.py``, ``svg.py``, ``sections.py``) and the
summary ``openpfi run`` prints (``summary.py``)."""
