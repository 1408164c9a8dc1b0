"""The application layer: each command of the CLI and each recipe stage is one call here."""
