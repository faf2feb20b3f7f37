"""Conditional commit writes on S3, and the probe that decides which ones are sent.

AWS documents `If-None-Match: *` and `If-Match` on PutObject and CompleteMultipartUpload,
and neither on CopyObject. moto enforces the PutObject and CompleteMultipartUpload ones
and ignores the CopyObject one; Garage 2.5 accepts all of them and overwrites anyway. Stowage
relies on none of this blindly: at startup (`conditional_writes = "auto"`) it probes the store
and sends only the conditions the store enforces; the others are left to the lock. The first
test pins each server's behaviour, so a server that changed would not pass the rest silently."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from faultproxy import FORWARD, REJECT, STRIP
from harness.oci import Client, make_image
from harness.services import s3_toml

REPO = "cond/app"
TAG_KEY = f"v2/repositories/{REPO}/_manifests/tags/latest/current/link"
PROBED = "S3 write conditions probed"
PROBE_KEYS = "_stowage_probe/"

# What each server does with a PutObject / CompleteMultipartUpload condition that does not
# hold (AWS: refuses it with 412).
ENFORCES = {"moto": True, "garage": False}


def status(error: pytest.ExceptionInfo) -> int:
    return error.value.response["ResponseMetadata"]["HTTPStatusCode"]


def put_refused(call) -> bool:
    """Whether S3 refused the conditional write with 412 (False: it wrote)."""
    try:
        call()
        return False
    except ClientError as e:
        assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 412, e
        return True


def test_the_s3_server_s_conditional_puts_are_as_pinned(s3):
    client, bucket = s3.client(), s3.new_bucket()
    enforces = ENFORCES[s3.name]
    client.put_object(Bucket=bucket, Key="k", Body=b"one")
    assert put_refused(lambda: client.put_object(
        Bucket=bucket, Key="k", Body=b"two", IfNoneMatch="*")) == enforces
    etag = client.head_object(Bucket=bucket, Key="k")["ETag"]
    client.put_object(Bucket=bucket, Key="k", Body=b"two", IfMatch=etag)
    assert put_refused(lambda: client.put_object(
        Bucket=bucket, Key="k", Body=b"three", IfMatch=etag)) == enforces
    assert client.get_object(Bucket=bucket, Key="k")["Body"].read() == (
        b"two" if enforces else b"three")

    def create_new(request, **_):
        request.headers["If-None-Match"] = "*"

    client.meta.events.register("before-sign.s3.CompleteMultipartUpload", create_new)
    upload = client.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    part = client.upload_part(Bucket=bucket, Key="k", UploadId=upload, PartNumber=1, Body=b"x")
    assert put_refused(lambda: client.complete_multipart_upload(
        Bucket=bucket, Key="k", UploadId=upload,
        MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]},
    )) == enforces


def probe_line(registry) -> str:
    log = registry.log_after(0, PROBED)
    lines = [line for line in log.splitlines() if PROBED in line]
    assert len(lines) == 1, log[-3000:]
    return lines[0]


def conditions_sent(proxy) -> list:
    """The conditional writes after the probe (whose scratch keys are under _stowage_probe/)."""
    return [e for e in proxy.log() if e.conditions and not e.key.startswith(PROBE_KEYS)]


def test_the_probe_finds_what_the_server_enforces_and_cleans_up(s3, registries):
    bucket = s3.new_bucket()
    registry = registries.start(s3_toml("blob_store", s3.endpoint, bucket, prefix="team"))
    line = probe_line(registry)
    put = "enforced" if ENFORCES[s3.name] else "ignored"
    assert f'if_none_match_put="{put}"' in line and f'if_match_put="{put}"' in line, line
    # Neither server enforces If-None-Match on CopyObject.
    assert 'if_none_match_copy="ignored"' in line, line
    if not ENFORCES[s3.name]:
        assert "does not enforce conditional writes" in registry.log_text()
    listed = s3.client().list_objects_v2(Bucket=bucket).get("Contents", [])
    assert listed == [], [o["Key"] for o in listed]


def test_commit_writes_carry_the_conditions_the_server_enforces(s3, proxy, registries):
    bucket = s3.new_bucket()
    registry = registries.start(s3_toml("blob_store", proxy.endpoint, bucket))
    probe_line(registry)
    first, second = make_image("cond-1", 1000), make_image("cond-2", 2000)

    Client(registry.url).push_image(REPO, "latest", first, expect=201)
    log = proxy.log()
    tag_puts = [e for e in log if e.key == TAG_KEY and e.action == "PutObject"]
    links = [e for e in log if e.action == "PutObject" and e.key.endswith("/link")]
    assert links
    if not ENFORCES[s3.name]:
        # Nothing the store would ignore is sent: the lock alone guards these commits.
        assert conditions_sent(proxy) == []
        Client(registry.url).push_image(REPO, "latest", second, expect=201)
        assert conditions_sent(proxy) == []
        return
    assert [(e.conditions, e.status) for e in tag_puts] == [((("if-none-match", "*"),), 200)]
    assert all(e.conditions == (("if-none-match", "*"),) for e in links), links
    etag = s3.client().head_object(Bucket=bucket, Key=TAG_KEY)["ETag"]

    # Moving the tag replaces exactly the version read under the lock.
    proxy.reset_log()
    Client(registry.url).push_image(REPO, "latest", second, expect=201)
    tag_puts = [e for e in proxy.log() if e.key == TAG_KEY and e.action == "PutObject"]
    assert [(e.conditions, e.status) for e in tag_puts] == [((("if-match", etag),), 200)]

    # Pushing again finds the content-addressed objects there: refused, and that is success.
    proxy.reset_log()
    Client(registry.url).push_manifest(REPO, "latest", first.manifest, expect=201)
    refused = [e for e in proxy.log() if e.status == 412]
    assert refused and all(e.conditions == (("if-none-match", "*"),) for e in refused)
    assert not any(e.key == TAG_KEY for e in refused)


def test_copies_carry_no_condition_the_server_ignores(s3, proxy, registries):
    bucket = s3.new_bucket()
    registry = registries.start(s3_toml("blob_store", proxy.endpoint, bucket))
    probe_line(registry)
    blob = make_image("cond-again", 3000).layers[0]
    Client(registry.url).push_chunked(REPO, blob, 3000, expect=201)
    copies = [e for e in proxy.log()
              if e.action == "CopyObject" and not e.key.startswith(PROBE_KEYS)]
    assert [(e.conditions, e.status) for e in copies] == [((), 200)]
    # Again: the completion finds the content address taken (before copying) and succeeds.
    proxy.reset_log()
    Client(registry.url).push_chunked(REPO, blob, 1000, expect=201)
    assert not [e for e in proxy.log() if e.action == "CopyObject"]


def push_two_tags(registry) -> None:
    for i, size in enumerate((1500, 7 * 1024 * 1024)):
        image = make_image(f"cond-fault-{i}", size)
        Client(registry.url).push_image(REPO, "latest", image,
                                        chunk_size=2 * 1024 * 1024 if i else None, expect=201)


@pytest.mark.parametrize("mode, found", [(STRIP, "ignored"), (REJECT, "rejected")])
def test_a_store_without_conditional_writes_still_takes_pushes(s3, proxy, registries, mode, found):
    """(a) a store that ignores the headers, (b) one that answers 501 to them: the probe
    says so, and pushes succeed without them. A server that ignores them itself (Garage) is
    (a) as it is, and the proxy forwards: Garage refuses the requests the proxy strips and
    signs again (403 "Invalid signature"), which moto, checking no signatures, takes."""
    ignores_itself = mode == STRIP and not ENFORCES[s3.name]
    proxy.set_conditions(FORWARD if ignores_itself else mode)
    bucket = s3.new_bucket()
    registry = registries.start(
        s3_toml("blob_store", proxy.endpoint, bucket, multipart_part_size="5MiB"))
    line = probe_line(registry)
    for name in ("if_none_match_put", "if_match_put", "if_none_match_copy"):
        assert f'{name}="{found}"' in line, line
    assert "does not enforce conditional writes" in registry.log_text()
    push_two_tags(registry)
    assert conditions_sent(proxy) == []


def test_a_rejected_condition_is_retried_once_without_it_then_sent_no_more(
        s3, proxy, registries):
    """`conditional_writes = "on"` skips the probe: the first write the store refuses with
    501 for its condition goes through without it, and no later one carries it."""
    proxy.set_conditions(REJECT)
    bucket = s3.new_bucket()
    registry = registries.start(
        s3_toml("blob_store", proxy.endpoint, bucket, conditional_writes="on",
                multipart_part_size="5MiB"))
    push_two_tags(registry)
    rejected = [e for e in proxy.log() if e.status == 501]
    # One per condition: If-None-Match, then If-Match when the tag moves.
    assert sorted(e.conditions[0][0] for e in rejected) == ["if-match", "if-none-match"], rejected
    log = registry.log_after(0, "sent no more")
    assert log.lower().count("retrying once without its condition") == 2, log[-3000:]
    assert log.count("sent no more") == 2, log[-3000:]


def test_off_sends_no_condition_and_does_not_probe(s3, proxy, registries):
    bucket = s3.new_bucket()
    registry = registries.start(
        s3_toml("blob_store", proxy.endpoint, bucket, conditional_writes="off"))
    push_two_tags(registry)
    assert [e for e in proxy.log() if e.conditions] == []
    assert PROBED not in registry.log_text()
