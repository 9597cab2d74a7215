"""PostgreSQL: versioned migrations, the record registry, jobs and the append-only audit trail."""
