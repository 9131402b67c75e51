"""The bundle file itself: whatever sizes the payload is written in, it decrypts to exactly what went
in, chunk by chunk (the last one marked), and the signed checksum covers it."""
from __future__ import annotations

import os

import pytest

from appliance import signing
from appliance.exchange import container, keys

CHUNK = container.CHUNK


@pytest.fixture(scope="module")
def parties(tmp_path_factory):
    supervisor = keys.create_supervisor_key(tmp_path_factory.mktemp("keys") / "supervisor.key")
    return signing.new_private_key(), supervisor


@pytest.mark.parametrize("sizes", [
    [], [1], [CHUNK - 1], [CHUNK], [CHUNK + 1], [3 * CHUNK], [3 * CHUNK + 5],     # one write each
    [CHUNK - 7, 7, 1], [120_000] * 20, [2 * CHUNK + 3, 10, CHUNK - 13, CHUNK],  # many writes
])
def test_any_write_sizes_round_trip_and_only_the_last_chunk_is_marked(tmp_path, parties, sizes):
    signing_key, supervisor = parties
    payload = os.urandom(sum(sizes))
    writer = container.BundleWriter(tmp_path, "b.bccdms", {"post_id": "post-1"}, signing_key,
                                    supervisor.public_key())
    offset = 0
    for size in sizes:
        writer.write(payload[offset:offset + size])
        offset += size
    path = writer.commit()
    chunks = max(1, -(-len(payload) // CHUNK))
    env = container.read_envelope(path)
    assert env.ct_len == len(payload) + chunks * container.TAG         # whole chunks, one short last one
    container.verify_envelope(env, {"post-1": signing.public_b64(signing_key)})
    with container.open_payload(env, supervisor) as stream:
        assert stream.read() == payload
    assert not list(tmp_path.glob(f"*{container.PARTIAL_SUFFIX}"))
