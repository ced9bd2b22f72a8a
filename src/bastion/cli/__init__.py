"""The `bastion` command line: one command group per capability."""
