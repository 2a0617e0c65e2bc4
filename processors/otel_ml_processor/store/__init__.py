"""Store stage: the production ML database (SQLite by default, PostgreSQL for shared state)."""
