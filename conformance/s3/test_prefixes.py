"""Two registries with different key prefixes share one bucket without seeing each other's
repositories."""

from __future__ import annotations

from harness.oci import Client, make_image
from harness.services import s3_toml
from trees import BucketTree, layout_problems

PREFIXES = ("team-a", "team-b/nested")


def test_registries_with_different_prefixes_share_a_bucket_apart(s3, registries):
    bucket = s3.new_bucket()
    a, b = (registries.start(s3_toml("blob_store", s3.endpoint, bucket, p)) for p in PREFIXES)
    image_a, image_b = make_image("prefix-a", 4096), make_image("prefix-b", 4096)
    only_a = make_image("prefix-only-a", 2048)
    Client(a.url).push_image("shared/app", "v1", image_a, expect=201)
    Client(b.url).push_image("shared/app", "v1", image_b, expect=201)
    Client(a.url).push_image("only-a/tool", "v1", only_a, expect=201)

    assert Client(a.url).catalog() == ["only-a/tool", "shared/app"]
    assert Client(b.url).catalog() == ["shared/app"]
    Client(a.url).assert_pulls("shared/app", "v1", image_a)
    Client(b.url).assert_pulls("shared/app", "v1", image_b)
    assert Client(b.url).get_manifest("only-a/tool", "v1").status_code == 404
    assert Client(b.url).get_blob("shared/app", only_a.layers[0].digest).status_code == 404

    client = s3.client()
    everything = BucketTree(client, bucket).keys()
    assert everything and all(k.startswith(("team-a/", "team-b/nested/")) for k in everything)
    for prefix in PREFIXES:
        assert layout_problems(BucketTree(client, bucket, prefix)) == []
