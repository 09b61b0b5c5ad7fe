"""The embedded SecantusDB's command line, and what the benchmarks print of it."""

from pathlib import Path

from app.embedded import DB_CACHE_SIZE, database_facts, secantus_argv


def test_the_server_is_started_with_the_cache_size_the_benchmarks_print() -> None:
    argv = secantus_argv(27999, Path("/tmp/x"), "WARNING")
    assert argv[argv.index("--cache-size") + 1] == DB_CACHE_SIZE == "1G"
    assert argv[argv.index("--storage-path") + 1] == "/tmp/x"
    assert database_facts()["cache_size"] == argv[argv.index("--cache-size") + 1]
