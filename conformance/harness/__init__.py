"""The harness every live suite shares (conformance/clients, s3, replicas, auth, mirror, the
scripts in live/ and the benchmarks in bench/); see conformance/README.md.

- ``process``: the one launcher (free loopback ports, start and wait, stop by PID)
- ``registry``: Stowage on each store layout, and the handle on any running registry
- ``services``: S3 servers (moto, Garage), Redis, CNCF Distribution
- ``oci``: the one OCI distribution client
- ``fixtures``: the pytest fixtures the suites share
- ``auth``, ``jwt``, ``pki``: credentials, tokens and certificates for Stowage's configuration
- ``token_server``, ``oidc_provider``, ``otlp_receiver``, ``docker_engine``: peers a test
  starts (a Distribution token server, an OIDC provider, a trace collector, a Docker engine)
- ``layout``: OCI image layouts built without any network
- ``tools``: skopeo, podman and buildah, and comparing what they bring back
"""
