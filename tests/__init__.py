"""bulktag's tests: a package, so that every test module imports shared helpers as
`tests.support.*` and no test module imports another."""
