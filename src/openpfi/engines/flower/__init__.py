"""The Flower engine: the only package that imports flwr (``pip install 'openpfi[flower]'``).

- ``server_app.app`` / ``client_app.app``: the ServerApp and ClientApp, built from the same
  ``FedServer`` and ``FederatedClient`` as the in-process engine;
- ``nodes``: which SuperNode holds which client (identified at the start, rejoins later);
- ``resume``: a Flower run continued from its last complete round;
- ``node_service`` / ``node_worker`` / ``channel``: the client side kept in memory across a
  run's messages, in one long-lived worker process per SuperNode on the deployment runtime;
- ``records``: openpfi values as Flower records (numpy arrays, never pickle);
- ``settings``: the run config and the node config;
- ``secagg``: sums under Flower's SecAgg+;
- ``deploy`` / ``federation`` / ``processes``: ``openpfi deploy local`` (SuperLink + SuperNodes
  on 127.0.0.1) and the resume of a Flower run; ``tls``, ``auth`` (SuperNode key pairs);
  ``supernode``: ``openpfi deploy supernode`` (one client host's SuperNode, inputs checked).

``deploy``, ``federation``, ``processes``, ``supernode``, ``auth``, ``channel``, ``settings`` and
``tls`` do not import flwr; they start Flower's processes or talk to the node worker.
"""
