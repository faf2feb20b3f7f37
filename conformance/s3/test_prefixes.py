"""Two registries with different key prefixes share one bucket without seeing each other's
repositories."""

from __future__ import annotations

import requests

from configs import s3_toml
from s3_client import TIMEOUT, assert_pulls, catalog, get_blob, make_image, push_image
from trees import BucketTree, layout_problems

PREFIXES = ("team-a", "team-b/nested")


def test_registries_with_different_prefixes_share_a_bucket_apart(s3, registries):
    bucket = s3.new_bucket()
    a, b = (registries.start(s3_toml("blob_store", s3.endpoint, bucket, p)) for p in PREFIXES)
    image_a, image_b = make_image("prefix-a", 4096), make_image("prefix-b", 4096)
    only_a = make_image("prefix-only-a", 2048)
    push_image(a.url, "shared/app", "v1", image_a)
    push_image(b.url, "shared/app", "v1", image_b)
    push_image(a.url, "only-a/tool", "v1", only_a)

    assert catalog(a.url) == ["only-a/tool", "shared/app"]
    assert catalog(b.url) == ["shared/app"]
    assert_pulls(a.url, "shared/app", "v1", image_a)
    assert_pulls(b.url, "shared/app", "v1", image_b)
    unseen = requests.get(f"{b.url}/v2/only-a/tool/manifests/v1", timeout=TIMEOUT)
    assert unseen.status_code == 404
    assert get_blob(b.url, "shared/app", only_a.layers[0].digest).status_code == 404

    client = s3.client()
    everything = BucketTree(client, bucket).keys()
    assert everything and all(k.startswith(("team-a/", "team-b/nested/")) for k in everything)
    for prefix in PREFIXES:
        assert layout_problems(BucketTree(client, bucket, prefix)) == []
