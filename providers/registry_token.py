"""The password of a container registry token, as a Pulumi dynamic resource over Azure Resource
Manager's REST API.

azure-native creates the token and its scope map but cannot generate the token's passwords: the
password value is read-only in the API, and only the `generateCredentials` action makes one
(github.com/pulumi/pulumi-azure-native/issues/3099; the REST example RegistryGenerateCredentials.json
in Azure/azure-rest-api-specs, containerregistry stable/2023-07-01). This provider calls that action
with the credentials of whoever runs `pulumi up` (DefaultAzureCredential: `az login`, a managed
identity, environment variables), reads the token to notice a password removed outside the stack,
makes a new one when the old is near its expiry, and on delete removes it from the token the way
`az acr token credential delete` does (a token update listing the passwords that remain).

Pickled into the state like every dynamic provider: importable from the project root, plain inputs.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Optional

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from providers.arm import ARM_ENDPOINT, ArmError, Arm

API_VERSION = "2023-07-01"
"""Container registry management API with tokens, scope maps and generateCredentials (GA)."""
ROTATE_BEFORE = dt.timedelta(days=30)
"""A password this close to its expiry is replaced on the next `pulumi up`."""
def _expiry(days: Optional[float]) -> Optional[str]:
    if not days:
        return None
    when = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=float(days))
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: Optional[str]) -> Optional[dt.datetime]:
    if not text:
        return None
    text = text.rstrip("Z")
    if "." in text:  # ARM writes up to 7 fractional digits; Python reads 6
        head, frac = text.split(".", 1)
        text = f"{head}.{frac[:6]}"
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc)


def near_expiry(expiry: Optional[str], now: Optional[dt.datetime] = None) -> bool:
    """Whether a password expiring at `expiry` (None: never) should be replaced now."""
    when = _parse_time(expiry)
    now = now or dt.datetime.now(dt.timezone.utc)
    return when is not None and when - now < ROTATE_BEFORE


class TokenPasswordProvider(ResourceProvider):
    """One password (`password1` or `password2`) of a registry token."""

    def _generate(self, props: dict[str, Any]) -> dict[str, Any]:
        arm = Arm(props.get("arm_endpoint") or ARM_ENDPOINT, API_VERSION)
        body: dict[str, Any] = {"tokenId": props["token_id"], "name": props["password_name"]}
        expiry = _expiry(props.get("expiry_days"))
        if expiry:
            body["expiry"] = expiry
        result = arm.result(arm.call("POST", f"{props['registry_id']}/generateCredentials", body))
        password = next((p for p in result.get("passwords", []) if p.get("name") == props["password_name"]), None)
        if password is None or not password.get("value"):
            raise RuntimeError(f"generateCredentials returned no {props['password_name']} for {props['token_id']}")
        return {**props, "username": result.get("username") or props["token_id"].rsplit("/", 1)[1],
                "password": password["value"], "expiry": password.get("expiry")}

    def create(self, props: dict[str, Any]) -> CreateResult:
        outs = self._generate(props)
        return CreateResult(id_=f"{props['token_id']}/{props['password_name']}", outs=outs)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        arm = Arm(props.get("arm_endpoint") or ARM_ENDPOINT, API_VERSION)
        response = arm.call("GET", props["token_id"])
        if response.status_code == 404:
            return ReadResult(id_=None, outs={})  # type: ignore[arg-type] # the token is gone
        if response.status_code != 200:
            raise ArmError(response)
        credentials = (response.json().get("properties") or {}).get("credentials") or {}
        found = next((p for p in credentials.get("passwords") or [] if p.get("name") == props["password_name"]), None)
        if found is None:
            return ReadResult(id_=None, outs={})  # type: ignore[arg-type] # removed outside the stack
        return ReadResult(id_=id_, outs={**props, "expiry": found.get("expiry")})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = [k for k in ("registry_id", "token_id", "token_created", "password_name", "arm_endpoint")
                    if olds.get(k) != news.get(k)]
        rotate = olds.get("expiry_days") != news.get("expiry_days") or near_expiry(olds.get("expiry"))
        # Delete first: a replacement writes the same password name on a token with the same id, and
        # deleting the old one afterwards would remove the new password.
        return DiffResult(changes=bool(replaces) or rotate, replaces=replaces, delete_before_replace=True)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        # generateCredentials for the same name replaces that password: the old one stops working.
        return UpdateResult(outs=self._generate(news))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        arm = Arm(props.get("arm_endpoint") or ARM_ENDPOINT, API_VERSION)
        response = arm.call("GET", props["token_id"])
        if response.status_code == 404:
            return
        if response.status_code != 200:
            raise ArmError(response)
        credentials = (response.json().get("properties") or {}).get("credentials") or {}
        names = [p["name"] for p in credentials.get("passwords") or [] if p.get("name")]
        if props["password_name"] not in names:
            return
        remaining = [{"name": n} for n in names if n != props["password_name"]]
        arm.result(arm.call("PATCH", props["token_id"], {"properties": {"credentials": {"passwords": remaining}}}))


class TokenPassword(Resource, module="containerregistry", name="TokenPassword"):
    """A generated password of a registry token; `password` is secret."""

    username: pulumi.Output[str]
    password: pulumi.Output[str]
    expiry: pulumi.Output[str]

    def __init__(self, name: str, props: dict[str, Any], opts: Optional[pulumi.ResourceOptions] = None):
        secret = pulumi.ResourceOptions(additional_secret_outputs=["password"])
        super().__init__(TokenPasswordProvider(), name, {**props, "username": None, "password": None, "expiry": None},
                         pulumi.ResourceOptions.merge(opts, secret))

