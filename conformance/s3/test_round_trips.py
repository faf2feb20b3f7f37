"""Round trips on S3: an operation that needs several independent answers from the store asks
for them at once. With every S3 request held back by the proxy, accepting a manifest costs
four round trips however many layers it has: the manifest's bytes stored, each tag read and
each layer checked, all at once; the links; the tags; the collector's state (the state the
fence compares it with is the one the process last read). A listing of 20 referrers costs
two (the listing, then every referrer read at once).

Round trips are counted as waves: a request that depends on an answer reaches the proxy at
least LATENCY after the one it waited for, while requests sent at once arrive together."""

from __future__ import annotations

import json
import time

from faultproxy import Faults
from harness.oci import MANIFEST_TYPE, Client, expect, make_image, sha256_digest
from harness.services import s3_toml

# Seconds added to every S3 request: well above what the mock and the proxy take themselves,
# so that time counts round trips.
LATENCY = 0.1
LAYERS = 20
TIMED_RUNS = 3


def s3_registry(s3, proxy, registries, extra_toml: str = ""):
    bucket = s3.new_bucket()
    return registries.start(
        s3_toml("blob_store", proxy.endpoint, bucket)
        + s3_toml("metadata_store", proxy.endpoint, bucket, prefix="meta"),
        extra_toml,
    )


def waves(log) -> int:
    """How many times the registry waited for the store: a request arriving within half a
    LATENCY of a wave's first request was sent with it."""
    count, started = 0, None
    for arrived in sorted(entry.arrived for entry in log):
        if started is None or arrived - started > LATENCY / 2:
            count, started = count + 1, arrived
    return count


def slowest_path(proxy, action) -> tuple[float, int, int]:
    """The fastest of TIMED_RUNS runs of `action(run)`, in round trips of LATENCY, the
    S3 requests that run made and the waves they came in."""
    best = None
    for run in range(TIMED_RUNS):
        proxy.reset_log()
        start = time.perf_counter()
        action(run)
        took = (time.perf_counter() - start) / LATENCY
        if best is None or took < best[0]:
            log = proxy.log()
            best = (took, len(log), waves(log))
    return best


def test_a_manifest_of_many_layers_costs_the_round_trips_of_one(s3, proxy, registries, summary):
    # Checking every layer is what makes a manifest cost more the more layers it has.
    checked = "[registry]\nallow_missing_manifest_references = false\n"
    registry = s3_registry(s3, proxy, registries, checked)
    one, many = make_image("rt-one", 1024), make_image("rt-many", *[1024] * LAYERS)
    client = Client(registry.url)
    for name, image in (("one", one), ("many", many)):
        client.push_image(f"rt/{name}", "first", image, expect=201)
    proxy.set_faults(Faults(delay=1.0, delay_secs=LATENCY))
    timed = {}
    for name, image in (("one", one), ("many", many)):
        timed[name] = slowest_path(
            proxy,
            lambda run: client.push_manifest(f"rt/{name}", f"t{run}", image.manifest, expect=201),
        )
        summary(
            f"manifest PUT with {len(image.layers)} layer(s), {LATENCY * 1000:.0f} ms per S3 request: "
            f"{timed[name][0]:.1f} round trips' time, {timed[name][1]} S3 requests in "
            f"{timed[name][2]} waves"
        )
    (one_trips, one_requests, one_waves) = timed["one"]
    (many_trips, many_requests, many_waves) = timed["many"]
    # The 19 more layers are 38 more existence checks: asked one by one they would add 38
    # round trips; asked at once, none, and at most two on a loaded machine.
    assert many_requests >= one_requests + 2 * (LAYERS - 1), (one_requests, many_requests)
    assert many_trips - one_trips <= 2, timed
    # Four waves (asked one after another, the same writes and reads took ten), plus the
    # mock's own time for each.
    assert one_waves <= 4 and many_waves <= 4, timed
    assert many_trips <= 7, timed


def referrer(subject: bytes, config, index: int) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "artifactType": "application/vnd.stowage.test",
            "config": config.descriptor("application/vnd.oci.empty.v1+json"),
            "layers": [],
            "annotations": {"index": str(index)},
            "subject": {"mediaType": MANIFEST_TYPE, "digest": sha256_digest(subject), "size": len(subject)},
        }
    ).encode()


def test_a_referrers_listing_reads_its_referrers_at_once(s3, proxy, registries, summary):
    registry = s3_registry(s3, proxy, registries)
    image = make_image("rt-subject", 1024)
    client = Client(registry.url)
    client.push_image("rt/subject", "latest", image, expect=201)
    for index in range(LAYERS):
        body = referrer(image.manifest, image.config, index)
        client.push_manifest("rt/subject", sha256_digest(body), body, expect=201)
    proxy.set_faults(Faults(delay=1.0, delay_secs=LATENCY))

    def listing(_run):
        response = client.referrers("rt/subject", image.digest)
        assert len(expect(response, 200).json()["manifests"]) == LAYERS

    trips, made, waited = slowest_path(proxy, listing)
    summary(
        f"referrers listing of {LAYERS} referrers, {LATENCY * 1000:.0f} ms per S3 request: "
        f"{trips:.1f} round trips' time, {made} S3 requests in {waited} waves"
    )
    assert made >= LAYERS + 1, made
    assert waited <= 2, waited
    assert trips <= 4, trips
