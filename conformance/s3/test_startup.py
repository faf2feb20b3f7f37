"""Each S3 store is written once before the server listens. A store S3 refuses to write (no
such bucket, credentials that may not put objects) stops startup, naming the bucket and S3's
answer: before, the server started, logged a warning among its startup lines and failed
every push. A store that does not answer only warns: the server serves, `/readyz` answers
503 until the store comes back, and then pushes go through."""

from __future__ import annotations

import time

import pytest
import requests

from faultproxy import Faults
from harness.oci import TIMEOUT, Client, make_image
from harness.process import StartError, wait_until
from harness.registry import fs_toml, start_stowage
from harness.services import s3_toml

STARTUP_CHECK_FAILED = "failed the startup check's write"


@pytest.mark.parametrize("table, conditional_writes", [
    ("blob_store", "auto"), ("blob_store", "off"), ("metadata_store", "on")])
def test_a_missing_bucket_stops_startup_naming_it(s3, stowage_bin, tmp_path, table,
                                                 conditional_writes):
    missing = f"{s3.new_bucket()}-missing"
    store = s3_toml(table, s3.endpoint, missing, conditional_writes=conditional_writes)
    stores = store if table == "blob_store" else fs_toml("blob_store", tmp_path / "blobs") + store
    with pytest.raises(StartError) as failed:
        start_stowage(tmp_path / "work", stores, stowage_bin)
    assert f"cannot write the S3 store at {s3.endpoint}/{missing}/" in str(failed.value)


def test_a_store_that_does_not_answer_at_startup_is_reported_until_it_does(
        s3, proxy, registries):
    proxy.set_faults(Faults(fail=1.0, errors=("ServiceUnavailable",)))
    registry = registries.start(
        s3_toml("blob_store", proxy.endpoint, s3.new_bucket(), max_attempts=1),
        "[observability]\nreadiness_timeout_ms = 1000\n")
    assert STARTUP_CHECK_FAILED in registry.log_text()
    r = requests.get(f"{registry.url}/readyz", timeout=TIMEOUT)
    assert r.status_code == 503, r.text
    assert r.json()["checks"]["metadata_store"].startswith("error: "), r.text

    proxy.set_faults(Faults())
    # Readiness answers are kept for a second.
    time.sleep(1.1)
    wait_until(lambda: requests.get(f"{registry.url}/readyz", timeout=TIMEOUT).status_code == 200,
               "/readyz once the store answers", timeout=10)
    image = make_image("startup-later", 1000)
    Client(registry.url).push_image("startup/app", "latest", image, expect=201)
    Client(registry.url).assert_pulls("startup/app", "latest", image)
