"""Conditional commit writes on S3. moto honours If-None-Match: * and If-Match on PutObject
(checked here directly, so a moto that stopped would not pass the rest silently), and
stowage sends them: create-new for content addresses and links (an object already there is
success), and If-Match on the ETag read under the lock for a tag it moves."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError
from configs import s3_toml
from s3_client import expect, make_image, push_chunked, push_image, push_manifest

REPO = "cond/app"
TAG_KEY = f"v2/repositories/{REPO}/_manifests/tags/latest/current/link"


def status(error: pytest.ExceptionInfo) -> int:
    return error.value.response["ResponseMetadata"]["HTTPStatusCode"]


def test_moto_honours_conditional_puts(s3):
    client, bucket = s3.client(), s3.new_bucket()
    client.put_object(Bucket=bucket, Key="k", Body=b"one")
    with pytest.raises(ClientError) as refused:
        client.put_object(Bucket=bucket, Key="k", Body=b"two", IfNoneMatch="*")
    assert status(refused) == 412
    etag = client.head_object(Bucket=bucket, Key="k")["ETag"]
    client.put_object(Bucket=bucket, Key="k", Body=b"two", IfMatch=etag)
    with pytest.raises(ClientError) as refused:
        client.put_object(Bucket=bucket, Key="k", Body=b"three", IfMatch=etag)
    assert status(refused) == 412
    assert client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"two"

    # Upload completion may complete a multipart upload with If-None-Match: *. (It may
    # also copy with it: S3 honours that, moto 5.2 ignores it on CopyObject.)
    def create_new(request, **_):
        request.headers["If-None-Match"] = "*"

    client.meta.events.register("before-sign.s3.CompleteMultipartUpload", create_new)
    upload = client.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    part = client.upload_part(Bucket=bucket, Key="k", UploadId=upload, PartNumber=1, Body=b"x")
    with pytest.raises(ClientError) as refused:
        client.complete_multipart_upload(
            Bucket=bucket, Key="k", UploadId=upload,
            MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]},
        )
    assert status(refused) == 412
    assert client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"two"


def puts_of(proxy, key: str):
    return [e for e in proxy.log() if e.key == key and e.action == "PutObject"]


def test_commit_writes_carry_their_conditions(s3, proxy, registries):
    bucket = s3.new_bucket()
    registry = registries.start(s3_toml("blob_store", proxy.endpoint, bucket))
    first, second = make_image("cond-1", 1000), make_image("cond-2", 2000)

    push_image(registry.url, REPO, "latest", first)
    log = proxy.log()
    tag_puts = [e for e in log if e.key == TAG_KEY and e.action == "PutObject"]
    assert [(e.conditions, e.status) for e in tag_puts] == [((("if-none-match", "*"),), 200)]
    links = [e for e in log if e.action == "PutObject" and e.key.endswith("/link")]
    assert links and all(e.conditions == (("if-none-match", "*"),) for e in links), links
    etag = s3.client().head_object(Bucket=bucket, Key=TAG_KEY)["ETag"]

    # Moving the tag replaces exactly the version read under the lock.
    proxy.reset_log()
    push_image(registry.url, REPO, "latest", second)
    assert [(e.conditions, e.status) for e in puts_of(proxy, TAG_KEY)] == [
        ((("if-match", etag),), 200)
    ]

    # Pushing again finds the content-addressed objects there: refused, and that is success.
    proxy.reset_log()
    expect(push_manifest(registry.url, REPO, "latest", first), 201)
    refused = [e for e in proxy.log() if e.status == 412]
    assert refused and all(e.conditions == (("if-none-match", "*"),) for e in refused)
    assert not any(e.key == TAG_KEY for e in refused)


def test_upload_completion_creates_its_content_address_new(s3, proxy, registries):
    bucket = s3.new_bucket()
    registry = registries.start(s3_toml("blob_store", proxy.endpoint, bucket))
    blob = make_image("cond-again", 3000).layers[0]
    expect(push_chunked([registry.url], REPO, blob, 3000), 201)
    copies = [e for e in proxy.log() if e.action == "CopyObject"]
    assert [(e.conditions, e.status) for e in copies] == [((("if-none-match", "*"),), 200)]
    # Again: the completion finds the content address taken (before copying) and succeeds.
    proxy.reset_log()
    expect(push_chunked([registry.url], REPO, blob, 1000), 201)
    assert not [e for e in proxy.log() if e.action == "CopyObject"]
