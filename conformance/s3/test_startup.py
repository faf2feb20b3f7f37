"""Each S3 store is written once before the server listens. A store S3 refuses to write (no
such bucket, credentials that may not put objects) stops startup, naming the bucket and S3's
answer: before, the server started, logged a warning among its startup lines and failed
every push. A store that does not answer only warns: the server serves, `/readyz` answers
503 until the store comes back, and then pushes go through. The access key may come from
the environment instead of the file, whole or not at all."""

from __future__ import annotations

import time

import pytest
import requests

from faultproxy import Faults
from harness.oci import TIMEOUT, Client, make_image
from harness.process import StartError, environment, wait_until
from harness.registry import fs_toml, start_stowage
from harness.services import S3_ACCESS_KEY, S3_SECRET_KEY, s3_toml

STARTUP_CHECK_FAILED = "failed the startup check's write"


def aws_environment(**aws: str) -> dict:
    """This process's environment without any AWS_ variable, plus `aws` (by their names
    after `AWS_`, in lower case)."""
    return environment("AWS_", **{f"AWS_{name.upper()}": value for name, value in aws.items()})


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


def test_the_access_key_may_come_from_the_environment(s3, stowage_bin, tmp_path):
    """Garage checks every signature, so there a push proves the key signed it; moto checks
    none, and shows the file needs no key."""
    store = s3_toml("blob_store", s3.endpoint, s3.new_bucket(), with_key=False)
    env = aws_environment(access_key_id=S3_ACCESS_KEY, secret_access_key=S3_SECRET_KEY)
    registry = start_stowage(tmp_path / "work", store, stowage_bin, env=env)
    try:
        image = make_image("key-from-env", 2000)
        Client(registry.url).push_image("env/app", "latest", image, expect=201)
        Client(registry.url).assert_pulls("env/app", "latest", image)
    finally:
        registry.stop()


@pytest.mark.parametrize("env", [aws_environment(),
                                 aws_environment(access_key_id=S3_ACCESS_KEY)],
                         ids=["none", "half"])
def test_without_a_whole_access_key_startup_stops_saying_what_to_set(s3, stowage_bin, tmp_path,
                                                                     env):
    store = s3_toml("blob_store", s3.endpoint, s3.new_bucket(), with_key=False)
    with pytest.raises(StartError) as failed:
        start_stowage(tmp_path / "work", store, stowage_bin, env=env)
    assert "no S3 access key for" in str(failed.value)
    assert "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in str(failed.value)


def test_a_key_s3_refuses_stops_startup(s3, stowage_bin, tmp_path):
    if s3.name == "moto":
        pytest.skip("moto checks no signatures: the Garage run of this suite checks this")
    store = s3_toml("blob_store", s3.endpoint, s3.new_bucket(), with_key=False)
    env = aws_environment(access_key_id=S3_ACCESS_KEY, secret_access_key="not-the-secret-key")
    with pytest.raises(StartError) as failed:
        start_stowage(tmp_path / "work", store, stowage_bin, env=env)
    assert f"cannot write the S3 store at {s3.endpoint}/" in str(failed.value)
