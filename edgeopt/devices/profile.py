"""Device profiles (``devices/<name>.yaml``): typed, with unknown keys refused by name and a suggestion."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgeopt.errors import ConfigError, did_you_mean


class SshProfile(BaseModel):
    """A Linux board reached with the OpenSSH client (so ``~/.ssh/config`` aliases, agent and ProxyJump work)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["ssh"] = "ssh"
    description: str = ""
    host: str = Field(description="Host name, address or an alias from ~/.ssh/config")
    user: str | None = Field(None, description="Login user (default: the ssh config's or the local user)")
    port: int | None = Field(None, ge=1, le=65535)
    identity: str | None = Field(None, description="Private key file (default: the agent / ssh config)")
    known_hosts: str | None = Field(None, description="known_hosts file (default: the user's own)")
    host_key_check: Literal["strict", "accept-new"] = Field(
        "strict", description="strict: the host key must already be known; accept-new: trust it on first contact")
    python: str | None = Field(None, description="Python on the device (default: the venv `edgeopt device setup` "
                                                  "made in work_dir, else python3)")
    work_dir: str = Field("~/edgeopt", description="Everything edgeopt writes on the device stays in here")
    threads: list[Annotated[int, Field(ge=1, le=256)]] = Field(
        default_factory=list, description="Thread counts to benchmark (default: the config's)")
    emulated: bool = Field(False, description="Emulated CPU: latency is labelled and never used for speed claims")
    connect_timeout: int = Field(10, ge=1, description="Seconds to wait for the connection")
    command_timeout: int = Field(1800, ge=1, description="Seconds one command (a benchmark) may take")


def parse_profile(data: dict, source: str) -> SshProfile:
    """The validated profile, or one ConfigError naming every bad key (with did-you-mean for typos)."""
    try:
        return SshProfile(**data)
    except ValidationError as exc:
        lines, hint = [], None
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            if err["type"] == "extra_forbidden":
                suggestion = did_you_mean(key, SshProfile.model_fields)
                lines.append(f"unknown key '{key}'" + (f" ({suggestion})" if suggestion else ""))
                hint = hint or suggestion
            elif err["type"] == "missing":
                lines.append(f"missing key '{key}'")
            else:
                lines.append(f"'{key}': {err['msg']} (found {err.get('input')!r})")
        raise ConfigError(f"invalid device profile {source}: " + "; ".join(lines),
                          hint=hint or f"keys: {', '.join(SshProfile.model_fields)}") from None
