"""The Flower engine: the only package that imports flwr (``pip install 'openpfi[flower]'``).

- ``server_app.app`` / ``client_app.app``: the ServerApp and ClientApp, built from the same
  ``FedServer`` and ``FederatedClient`` as the in-process engine;
- ``records``: openpfi values as Flower records (numpy arrays, never pickle);
- ``settings``: the run config and the node config;
- ``secagg``: sums under Flower's SecAgg+;
- ``deploy``: ``openpfi deploy local`` (SuperLink + SuperNodes on 127.0.0.1), ``tls``;
- ``bench``: per-round wall time and bytes on the wire.

``deploy``, ``settings`` and ``tls`` do not import flwr; they start Flower's processes.
"""
