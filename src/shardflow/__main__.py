"""``python -m shardflow``: the ``shardflow`` command (see :mod:`shardflow._cli`)."""

from shardflow._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
