"""Who the caller is: one STS GetCallerIdentity with botocore's retries off.

The pre-flight check (`app/preflight.py`) asks it before any work starts, under a short deadline:
a refused port must answer at once rather than after botocore's backoff, and a black-holed
endpoint is left to the caller's timeout. It raises what botocore raises; `reads.aws_error_of`
reads it.
"""

from __future__ import annotations

from bulktag.config import Settings


async def caller_account(settings: Settings, seconds: float) -> str:
    """The account of the caller's credentials; connect and read time out after `seconds` at
    most (or the settings' timeouts when shorter)."""
    from aiobotocore.config import AioConfig

    from bulktag.aws.accounts import Accounts

    accounts = Accounts(settings)
    config = AioConfig(retries={"total_max_attempts": 1, "mode": "standard"},
                       connect_timeout=min(settings.connect_timeout, seconds),
                       read_timeout=min(settings.request_timeout, seconds))
    async with accounts.base.create_client(
        "sts", region_name=settings.region or "us-east-1", endpoint_url=accounts.sts_endpoint,
        config=config,
    ) as sts:
        return str((await sts.get_caller_identity())["Account"])
