"""Check a rendered configuration with the proxy's own binary before it goes live.

The check runs ``nginx -t`` or ``haproxy -c`` in a throw-away container of the proxy's own image,
with no network, so what is checked is what that proxy version will accept. Verdicts are cached by
the configuration's *shape*: the same text with every backend address replaced by a placeholder.
Task addresses come from Docker, not from labels, so a config that differs from a checked one only
in addresses needs no new container; scaling a service then costs no check at all.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field

import docker
import docker.errors

from . import checkcert
from .bounded import remember
from .desired import DesiredProxy
from .gateway import Gateway
from .kinds import KINDS
from .logs import event
from .render import Rendered, RenderOptions
from .verify import Verdict, shape
from .vocabulary import Vocabulary

log = logging.getLogger(__name__)

CHECK_DIR = "/tmp"
CHECK_FILE = "interlock-check.conf"


def check_files(desired: DesiredProxy, rendered: Rendered, secrets_dir: str) -> dict[str, str]:
    """The config, the files it names beside it (HAProxy's crt-list), and the stand-in
    certificate at each path the config names (paths from "/")."""
    files = {f"{CHECK_DIR}/{CHECK_FILE}".lstrip("/"): rendered.text}
    files.update({path.lstrip("/"): text for path, text in rendered.files.items()})
    for cert in desired.certificates:  # an inline one's real key never leaves the proxy's files
        base = cert.file if cert.inline else f"{secrets_dir}/{cert.file}"
        base = base.lstrip("/")
        files[base], files[f"{base}.key"] = checkcert.CERT, checkcert.KEY
    return files


@dataclass
class Checker:
    api: Gateway
    timeout: float = 30.0
    check_label: str = Vocabulary("interlock").check  # marks the check containers
    verdicts: dict[tuple[str, str], Verdict] = field(default_factory=dict)

    def check(self, desired: DesiredProxy, rendered: Rendered, options: RenderOptions) -> Verdict:
        key = (desired.proxy.image, shape(desired, options))
        if key not in self.verdicts:
            files = check_files(desired, rendered, options.secrets_dir)
            remember(
                self.verdicts, key, self._run(desired.proxy.image, desired.proxy.spec.kind, files)
            )
            event(log, "config_checked", proxy=desired.proxy.name, ok=self.verdicts[key].ok)
        return self.verdicts[key]

    def _create(self, image: str, kind: str) -> str:
        command = KINDS[kind].check_argv(f"{CHECK_DIR}/{CHECK_FILE}")
        kwargs = {
            "entrypoint": command[:1],
            "command": command[1:],
            "network_disabled": True,
            "labels": {self.check_label: "true"},
        }
        try:
            return self.api.create_container(image, **kwargs)["Id"]
        except docker.errors.ImageNotFound:
            self.api.pull(image)
            return self.api.create_container(image, **kwargs)["Id"]

    def _run(self, image: str, kind: str, files: dict[str, str]) -> Verdict:
        try:
            container = self._create(image, kind)
        except docker.errors.APIError as error:
            return Verdict(False, f"cannot start a check container of {image}: {error}")
        try:
            self.api.put_files(container, "/", files)
            self.api.start(container)
            status = self.api.wait(container, timeout=self.timeout).get("StatusCode", 1)
            output = self.api.logs(container, stdout=True, stderr=True).decode(errors="replace")
            return Verdict(status == 0, output.strip())
        except Exception as error:  # a check that cannot run must not let the config through
            return Verdict(False, f"check of {image} failed to run: {error}")
        finally:
            with contextlib.suppress(docker.errors.APIError):
                self.api.remove_container(container, force=True)
