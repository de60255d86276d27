"""bulktag in-process against the simulator, moto, SQLite files and PostgreSQL."""
