"""The guides' web layer: `server`."""
