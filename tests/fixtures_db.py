"""PostgreSQL fixtures (owned by the meter data store): a fresh database per test run."""
