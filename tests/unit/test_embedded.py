"""The embedded SecantusDB's command line: mongod's default cache size."""

from pathlib import Path

from app.embedded import mongod_cache_size, secantus_argv

GIB = 2**30


def test_the_cache_is_half_of_memory_less_a_gibibyte_as_mongod_sizes_it() -> None:
    assert mongod_cache_size(24 * GIB) == "11776M"
    assert mongod_cache_size(8 * GIB) == "3584M"
    assert mongod_cache_size(2 * GIB) == "512M"


def test_a_small_machine_still_gets_mongods_floor_of_256_mib() -> None:
    assert mongod_cache_size(1 * GIB) == "256M"
    assert mongod_cache_size(512 * 2**20) == "256M"


def test_the_server_is_started_with_this_machines_cache_size() -> None:
    argv = secantus_argv(27999, Path("/tmp/x"), "WARNING")
    at = argv.index("--cache-size")
    assert argv[at + 1] == mongod_cache_size()
    assert int(argv[at + 1].removesuffix("M")) >= 256
