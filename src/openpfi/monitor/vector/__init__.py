"""The fixed-length report vector: layout (``schema.py``, ``build.py``), a client's encoding
(``encode.py``), the server's estimators on the noisy sum (``sums.py``, ``derive.py``), and a model
the server holds scored as one noiseless client (``model.py``)."""
