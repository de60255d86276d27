"""Everything that calls AWS lives here, and nothing outside this package imports aiobotocore,
botocore or aiohttp's client: clients per account-region (`clients.py`), credentials and roles
(`accounts.py`), the three hot Tagging API calls signed by hand (`fast_tagging.py`), the read
path and exception → `Failure` mapping (`reads.py`), and the adaptive rate (`rate_limiter.py`)."""
