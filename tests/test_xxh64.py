"""xxh64, the base hash of shingles and band keys: bit-for-bit parity with the `xxhash` package."""

import random

import xxhash
from mixsieve import _core


def test_xxh64_matches_xxhash_all_lengths_random_seeds():
    rng = random.Random(20261126)
    for length in range(301):
        for _ in range(12):
            data = rng.randbytes(length)
            seed = rng.choice([0, 1, (1 << 64) - 1, rng.getrandbits(64), rng.getrandbits(32)])
            assert _core.xxh64(data, seed) == xxhash.xxh64_intdigest(data, seed=seed), (length, seed)


def test_xxh64_long_inputs():
    rng = random.Random(7)
    for length in [1000, 4096, 65537, 1 << 20]:
        data = rng.randbytes(length)
        assert _core.xxh64(data, 99) == xxhash.xxh64_intdigest(data, seed=99)


def test_xxh64_pair_is_two_xxh64_calls():
    """The one-pass pair behind the exact-duplicate digest equals two separate hashes."""
    rng = random.Random(11)
    for length in list(range(80)) + [4095, 4096, 4097, 65536]:
        data = rng.randbytes(length)
        s0, s1 = rng.getrandbits(64), rng.getrandbits(64)
        assert _core._xxh64_pair(data, s0, s1) == (
            xxhash.xxh64_intdigest(data, seed=s0),
            xxhash.xxh64_intdigest(data, seed=s1),
        ), length
