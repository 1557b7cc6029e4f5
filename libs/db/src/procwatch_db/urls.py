"""Database URL forms: operators write `postgresql://…`; SQLAlchemy wants a driver name."""


def sqlalchemy_url(url: str) -> str:
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    raise ValueError("DATABASE_URL must be a postgresql:// URL")


def libpq_url(url: str) -> str:
    """The form psycopg's own connect() and pools take."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)
