"""Garbage collection live, on three replicas sharing Redis: clients keep pushing images
that share layers, re-tagging and deleting, while the replicas collect every second (one
at a time, through the collector's lease). Afterwards every tag pulls completely with
skopeo, and once the grace period has passed, the store holds exactly what the tagged
images need."""

from __future__ import annotations

import random
import subprocess
import threading
import time

import pytest

from harness.oci import Blob, Client, Image, ResponseLog, UnexpectedStatus, sha256_digest

GRACE_SECS = 1
COLLECTIONS = f"[gc]\ngrace_period_secs = {GRACE_SECS}\ninterval_secs = 1\ndelete_untagged = true\n"
PUSHING_SECS = 12
CLIENTS = 3
TAGS_PER_CLIENT = 3
# Layers drawn from a small pool, so images share them and re-use ones left unreferenced.
LAYERS = [Blob(f"layer {i} ".encode() * (200 + 37 * i)) for i in range(10)]
REPO = "gc/live"
# A push the collector's fence refuses says so; tried again, it uploads anew.
FENCED = "being garbage collected"
ATTEMPTS = 20


def random_image(rng: random.Random, note: str) -> Image:
    config = Blob(f'{{"note":"{note}"}}'.encode())
    return Image(config, tuple(rng.sample(LAYERS, rng.randint(1, 3))), note)


def push(client: Client, rng: random.Random, tag: str, image: Image, replicas: int) -> bool:
    """Pushes every blob and the manifest, each through a random replica; `False` when the
    fence refused a step (503) and the push was given up."""
    try:
        for blob in image.blobs:
            client.push_blob(REPO, blob, expect=201, at=rng.randrange(replicas))
        client.push_manifest(REPO, tag, image.manifest, expect=201, at=rng.randrange(replicas))
        return True
    except UnexpectedStatus as refused:
        assert "503" in str(refused) and FENCED in str(refused), refused
        return False


def run_client(cid: int, client: Client, replicas: int, deadline: float,
               final: dict[str, Image | None], pushes: list[int]) -> None:
    rng = random.Random(cid)
    n = 0
    while time.monotonic() < deadline:
        n += 1
        tag = f"c{cid}-{rng.randrange(TAGS_PER_CLIENT)}"
        current = final.get(tag)
        if current is not None and rng.random() < 0.25:
            # Delete the image the tag points at (its tag goes with it).
            response = client.delete_manifest(REPO, current.digest, expect=(202, 404, 503),
                                              at=rng.randrange(replicas))
            if response.status_code == 202:
                final[tag] = None
            continue
        image = random_image(rng, f"{cid}-{n}")
        # A refused push may have moved the tag already: it is pushed until it is taken.
        for _ in range(ATTEMPTS):
            if push(client, rng, tag, image, replicas):
                final[tag] = image
                pushes[cid] += 1
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"{tag}: refused {ATTEMPTS} times in a row")


def skopeo_pulls(url: str, tag: str, workdir) -> None:
    host = url.removeprefix("http://")
    dest = workdir / "pulled" / tag
    dest.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["skopeo", "copy", "--src-tls-verify=false", f"docker://{host}/{REPO}:{tag}", f"dir:{dest}"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, f"skopeo could not pull {tag}: {done.stderr}"


def stored_digests(keys: list[str]) -> set[str]:
    """The digests whose bytes the store holds (`.../v2/blobs/sha256/xx/<hex>/data`)."""
    return {f"sha256:{k.split('/')[-2]}" for k in keys if "v2/blobs/sha256/" in k and k.endswith("/data")}


@pytest.mark.parametrize("kind", ["fs", "s3"])
def test_collecting_beside_pushes_on_three_replicas(kind, start_cluster, summary, tmp_path):
    cluster = start_cluster(kind, registry_toml=COLLECTIONS)
    log = ResponseLog()
    replicas = len(cluster.urls)
    finals: list[dict[str, Image | None]] = [{} for _ in range(CLIENTS)]
    pushes = [0] * CLIENTS
    deadline = time.monotonic() + PUSHING_SECS
    errors: list[BaseException] = []

    def client(c: int) -> None:
        try:
            run_client(c, Client(cluster.urls, log=log), replicas, deadline, finals[c], pushes)
        except BaseException as e:  # reported by the test's thread
            errors.append(e)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    fenced = [e for e in log.server_errors if FENCED in e]
    others = [e for e in log.server_errors if FENCED not in e]
    assert others == [], others
    assert sum(pushes) >= 10, pushes

    final = {tag: m for f in finals for tag, m in f.items()}
    for tag, image in final.items():
        if image is None:
            continue
        skopeo_pulls(cluster.urls[0], tag, tmp_path)
        pulled = (tmp_path / "pulled" / tag / "manifest.json").read_bytes()
        assert pulled == image.manifest, tag

    # Once the grace period has passed and a collection ran, only what the tagged images
    # need is stored: their manifests, configs and layers.
    needed = {sha256_digest(m.manifest) for m in final.values() if m}
    needed |= {b.digest for m in final.values() if m for b in m.blobs}
    deadline = time.monotonic() + 30
    while (stored := stored_digests(cluster.store_keys())) != needed:
        assert time.monotonic() < deadline, (
            f"missing {sorted(needed - stored)}, left over {sorted(stored - needed)}")
        time.sleep(0.5)
    summary(f"gc live on {kind}: {sum(pushes)} images pushed by {CLIENTS} clients in {PUSHING_SECS} s, "
            f"{len(fenced)} steps refused by the fence and pushed again, {len(needed)} digests kept")
