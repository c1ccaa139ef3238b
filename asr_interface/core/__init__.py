"""The guides' core types: `protocols` and `config`."""
