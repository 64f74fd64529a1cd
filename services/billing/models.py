"""Billing service tables (its own database; no other service reads them)."""
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass
