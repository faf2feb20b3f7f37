"""Configuration snippets for the stores under test."""

from __future__ import annotations

import json

from services import S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY


def s3_toml(table: str, endpoint: str, bucket: str, prefix: str = "", **settings) -> str:
    """`[<table>.s3]` on `endpoint` (the S3 server, or the fault proxy in front of it);
    `settings` are further keys of the table, e.g. max_attempts=2, multipart_part_size="5MiB"."""
    keys = {
        "access_key_id": S3_ACCESS_KEY,
        "secret_key": S3_SECRET_KEY,
        "endpoint": endpoint,
        "bucket": bucket,
        "region": S3_REGION,
        "key_prefix": prefix,
        **settings,
    }
    # JSON's strings and numbers are TOML's too.
    lines = [f"{key} = {json.dumps(value)}" for key, value in keys.items()]
    return f"[{table}.s3]\n" + "\n".join(lines) + "\n"
