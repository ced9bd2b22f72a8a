"""Alembic migrations of the gateway's database (run by :func:`bastion.guard.db.migrate`)."""
