"""A filesystem store its server cannot write stops startup, naming the folder and the
cause: otherwise the server would start, pass its readiness probe, serve what the folder
holds and refuse every push (the usual cause: a volume owned by another user than the
server's). The folder here is a read-only tmpfs, which refuses root too (mounting it
needs root, as the test command has)."""

from __future__ import annotations

import pytest

from harness.process import StartError
from harness.registry import fs_toml, start_stowage
from harness.tools import mounted_tmpfs

pytestmark = [pytest.mark.stowage_only, pytest.mark.fs_only]


@pytest.mark.parametrize("table", ["blob_store", "metadata_store"])
def test_a_store_the_server_cannot_write_stops_startup_naming_it(tmp_path, table):
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    with mounted_tmpfs(read_only, "ro,size=1m"):
        writable = fs_toml("blob_store", tmp_path / "writable")
        stores = (fs_toml("blob_store", read_only) if table == "blob_store"
                  else writable + fs_toml("metadata_store", read_only))
        with pytest.raises(StartError) as failed:
            start_stowage(tmp_path / "work", stores)
        assert f"cannot write the filesystem store at {read_only}" in str(failed.value)
        assert "Read-only file system" in str(failed.value)
