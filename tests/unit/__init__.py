"""Pure functions and small objects: no server, no store file, no process."""
