"""The silent-failure monitor: what a run measures, under privacy, and how it decides to alarm.

==============  ===================================================================================
package         what is there
==============  ===================================================================================
``modes/``      the six failure modes, one module each: slots, client encoding, server derivation,
                directions, margins, description (a seventh mode is one new module)
``probes/``     the public probe suites (items, package pools, seeded hashed samples), the refusal
                judge, running a suite on a model
``vector/``     the report vector: its schema (``schema.py``, ``build.py``), a client's encoding
                (``encode.py``), the server's estimators on the noisy sum (``sums.py``,
                ``derive.py``), a model the server holds as one noiseless client (``model.py``)
``privacy/``    distributed DP of the reports (clip, noise, report check) and the privacy ledger
``detection/``  change detectors on client streams (CUSUM / Page-Hinkley, calibrated thresholds),
                item-paired tests of the global model, the gap across groups, power
``reporting/``  report.json / report.html, the CLI summary
``audit.py``    the hash-chained evidence log of a run
``types.py``    what crosses packages: ``StreamName``, ``MetricPoint``, ``Alarm``, ``Scorer``
==============  ===================================================================================

The runtime around it lives in the layers above: the client side in ``client/monitor_client.py``,
the server's round hook in ``strategies/monitor_server.py``, the wiring in ``assembly/monitor*.py``.
"""
