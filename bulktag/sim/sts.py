"""STS on the simulator's port: GetCallerIdentity and AssumeRole in the query protocol.

The server sends every form-encoded call here except EC2's actions (`ec2.ACTIONS`), so an unknown
action gets STS's InvalidAction.

Access keys the simulator issues read `sim-<account>-<random>`, so the tagging side can tell the
caller's account from the key alone, without a lookup.
"""

from __future__ import annotations

import re
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from xml.sax.saxutils import escape

from bulktag.sim.config import SimConfig
from bulktag.sim.store import SimState, StsSession

NAMESPACE = "https://sts.amazonaws.com/doc/2011-06-15/"

_SIM_KEY = re.compile(r"sim-(\d{12})(?:-|$)")
_ROLE_ARN = re.compile(
    r"arn:aws(?:-[a-z]+)*:iam::(\d{12}):role/(?:[\w+=,.@-]+/)*([\w+=,.@-]{1,64})"
)
_SESSION_NAME = re.compile(r"[\w+=,.@-]{2,64}")


def account_of_key(access_key_id: str, default_account: str) -> str:
    """`sim-<12 digits>...` keys belong to that account; any other key to the default one."""
    m = _SIM_KEY.match(access_key_id)
    return m.group(1) if m else default_account


class StsError(Exception):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def handle(
    state: SimState, config: SimConfig, access_key_id: str, params: dict[str, str]
) -> tuple[int, str]:
    """Answer one STS query-protocol call: (HTTP status, XML body)."""
    action = params.get("Action", "")
    try:
        if action == "GetCallerIdentity":
            return 200, _get_caller_identity(state, config, access_key_id)
        if action == "AssumeRole":
            return 200, _assume_role(state, config, params)
        raise StsError("InvalidAction", f"Could not find operation {action or '(none)'}")
    except StsError as e:
        return e.status, error_xml(e.code, e.message, "Sender" if e.status < 500 else "Receiver")


def error_xml(code: str, message: str, kind: str = "Sender") -> str:
    return (
        f'<ErrorResponse xmlns="{NAMESPACE}"><Error><Type>{kind}</Type>'
        f"<Code>{escape(code)}</Code><Message>{escape(message)}</Message></Error>"
        f"<RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
    )


def _response(action: str, result: str) -> str:
    return (
        f'<{action}Response xmlns="{NAMESPACE}"><{action}Result>{result}</{action}Result>'
        f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata>"
        f"</{action}Response>"
    )


def _get_caller_identity(state: SimState, config: SimConfig, access_key_id: str) -> str:
    session = state.sts_sessions.get(access_key_id)
    if session is not None:
        role_name = session.role_arn.rsplit("/", 1)[-1]
        account = session.account
        arn = f"arn:aws:sts::{account}:assumed-role/{role_name}/{session.session_name}"
        user_id = f"AROA{account}SIM:{session.session_name}"
    else:
        account = account_of_key(access_key_id, config.default_account)
        arn = f"arn:aws:iam::{account}:user/sim"
        user_id = access_key_id or "AIDASIMULATOR"
    return _response(
        "GetCallerIdentity",
        f"<Arn>{escape(arn)}</Arn><UserId>{escape(user_id)}</UserId><Account>{account}</Account>",
    )


def _assume_role(state: SimState, config: SimConfig, params: dict[str, str]) -> str:
    role_arn = params.get("RoleArn", "")
    session_name = params.get("RoleSessionName", "")
    m = _ROLE_ARN.fullmatch(role_arn)
    if m is None:
        raise StsError("ValidationError", f"{role_arn!r} is not a valid IAM role ARN")
    if not _SESSION_NAME.fullmatch(session_name):
        raise StsError("ValidationError", "RoleSessionName must be 2 to 64 characters [\\w+=,.@-]")
    try:
        duration = int(params.get("DurationSeconds", "3600"))
    except ValueError:
        raise StsError("ValidationError", "DurationSeconds must be an integer") from None
    if not 900 <= duration <= 43200:
        raise StsError("ValidationError", "DurationSeconds must be between 900 and 43200")
    if role_arn in config.refused_roles:
        raise StsError(
            "AccessDenied", f"User is not authorized to perform: sts:AssumeRole on {role_arn}", 403
        )
    account, role_name = m.group(1), m.group(2)
    access_key_id = f"sim-{account}-{secrets.token_hex(8)}"
    state.sts_sessions[access_key_id] = StsSession(account, role_arn, session_name)
    expiration = (datetime.now(UTC) + timedelta(seconds=duration)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return _response(
        "AssumeRole",
        "<Credentials>"
        f"<AccessKeyId>{access_key_id}</AccessKeyId>"
        f"<SecretAccessKey>{secrets.token_urlsafe(30)}</SecretAccessKey>"
        f"<SessionToken>{secrets.token_urlsafe(48)}</SessionToken>"
        f"<Expiration>{expiration}</Expiration>"
        "</Credentials>"
        "<AssumedRoleUser>"
        f"<Arn>arn:aws:sts::{account}:assumed-role/{escape(role_name)}/{escape(session_name)}</Arn>"
        f"<AssumedRoleId>AROA{account}SIM:{escape(session_name)}</AssumedRoleId>"
        "</AssumedRoleUser>",
    )
