"""The integration guides (../shared/seeds/) as their users run them; see docs/BACKENDS.md."""
