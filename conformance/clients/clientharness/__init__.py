"""Helpers for the real-client conformance suite.

- ``registry``: start/stop the registry under test (Stowage or CNCF Distribution)
- ``layout``:   build and read OCI image layouts without any network
- ``tools``:    run skopeo / podman / buildah and compare what comes back
"""
