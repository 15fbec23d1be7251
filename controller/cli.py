"""The `interlock` command: run the loop, or look at what it would do.

interlock run                  the controller (a pass each interval, and on Swarm events)
interlock once                 one pass; exit 0 when converged, 1 when something failed
interlock render [--proxy P]   print the configuration the current Swarm gives
interlock diff                 what would change on each proxy; writes nothing
interlock validate             every routed service and what is wrong with its labels
interlock top                  live requests, errors and latency per route (the access logs)
interlock agent                reload this node's proxies in place for the controller
"""

from __future__ import annotations

import argparse
import difflib
import signal
import sys
import time

from . import acme, agentstatus, app, deployed, observe, report, top
from .logs import printable, setup
from .reconcile import Checks
from .settings import SettingsError, load_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="interlock", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--verbose", action="store_true", help="log the passes a verb runs (stderr, INFO)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the reconcile loop")
    sub.add_parser("once", help="one pass; exit status 0 = converged")
    render = sub.add_parser("render", help="print the config the current Swarm gives")
    render.add_argument("--proxy", help="only this proxy (service or container name)")
    sub.add_parser("diff", help="unified diff of deployed vs desired config, per proxy")
    validate = sub.add_parser("validate", help="routed services and the problems with their labels")
    validate.add_argument(
        "--check",
        action="store_true",
        help="also check every config with the proxy's binary (starts a container per config)",
    )
    status = sub.add_parser("status", help="proxies, routes and rejected services")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument(
        "--controller",
        help="agent mode: the controller's agents' API (default http://127.0.0.1:AGENT_PORT)",
    )
    sub.add_parser("agent", help="reload this node's proxies in place (a global service)")
    live = sub.add_parser("top", help="live requests, errors and latency per route")
    live.add_argument("--interval", type=top.seconds, default=2.0, help="seconds between views")
    live.add_argument("--window", type=top.seconds, default=30.0, help="seconds figures cover")
    live.add_argument("--iterations", type=int, default=0, help="views to show; 0: until Ctrl-C")
    return parser


def cmd_run(controller: app.Controller) -> int:
    signal.signal(signal.SIGTERM, lambda *_: controller.loop.stop.set())
    signal.signal(signal.SIGINT, lambda *_: controller.loop.stop.set())
    controller.serve()
    return 0


def cmd_once(controller: app.Controller) -> int:
    result = controller.reconciler.run_pass()
    for error in result.errors:
        print(f"error: {printable(error)}", file=sys.stderr)
    print(
        f"pass {result.pass_id}: {len(result.actions)} action(s), "
        f"{len(result.errors)} error(s), converged={result.converged}"
    )
    return 0 if result.converged else 1


def cmd_render(controller: app.Controller, proxy: str | None) -> int:
    result = controller.reconciler.run_pass(dry_run=True, checks=Checks.NONE)
    names = [proxy] if proxy else sorted(result.rendered)
    missing = [n for n in names if n not in result.rendered]
    if missing:
        print(
            printable(
                f"no such proxy: {', '.join(missing)} (have: {', '.join(sorted(result.rendered))})"
            ),
            file=sys.stderr,
        )
        return 1
    for name in names:
        if not proxy:
            print(f"# ---- proxy {name} ({result.rendered[name].short})")
        sys.stdout.write(result.rendered[name].text)
    return 0


def cmd_diff(controller: app.Controller) -> int:
    result = controller.reconciler.run_pass(dry_run=True, checks=Checks.NONE)
    changed = 0
    for desired in result.desired.proxies:
        name = desired.proxy.name
        if name not in result.rendered:
            continue
        deployed = controller.deployed_text(result.snapshot, desired.proxy) or ""
        lines = list(
            difflib.unified_diff(
                deployed.splitlines(keepends=True),
                result.rendered[name].text.splitlines(keepends=True),
                f"{name} (deployed)",
                f"{name} (desired)",
            )
        )
        changed += bool(lines)
        sys.stdout.writelines(lines)
    print(f"# {changed} proxy config(s) differ", file=sys.stderr)
    return 0


def cmd_validate(controller: app.Controller, check: bool) -> int:
    checks = Checks.ALL if check else Checks.NONE
    result = controller.reconciler.run_pass(dry_run=True, checks=checks)
    bad = {p.service for p in result.problems if p.rejected}
    for line in report.validation_report(result):
        print(line)
    return 1 if bad or result.refused else 0


def cmd_status(controller: app.Controller, as_json: bool, agents: str = "") -> int:
    result = controller.reconciler.run_pass(dry_run=True, checks=Checks.NONE)
    proxies = [d.proxy for d in result.desired.proxies]
    served = controller.reconciler.served(
        result.snapshot, [p for p in proxies if p.mode == "signal"]
    )
    task_configs = {
        p.name: observe.task_configs(controller.api, p)
        for p in proxies
        if p.mode == "rolling" and p.service_id
    }
    rows = report.proxy_rows(result, controller.settings.label_prefix, served, task_configs)
    settings = controller.settings
    certificates = acme.certificate_rows(
        result.acme, time.time(), settings.acme_renew_days, settings.acme_retry_seconds
    )
    text = report.status_report(
        rows, report.route_rows(result), report.rejected_rows(result), as_json, certificates
    )
    if controller.board is not None:
        names = agentstatus.node_names(controller.api)
        tasks = agentstatus.task_rows(result, controller.board, names)
        text = agentstatus.with_tasks(text, tasks, agents, as_json)
    print(text)
    return 0


def cmd_top(controller: app.Controller, args: argparse.Namespace) -> int:
    def proxies() -> list:
        result = controller.reconciler.run_pass(dry_run=True, checks=Checks.NONE)
        return [desired.proxy for desired in result.desired.proxies]

    return top.run(controller.api, proxies, args.interval, args.window, args.iterations)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as error:
        print(f"interlock: {error}", file=sys.stderr)
        return 2
    # A verb's answer is on stdout; its own passes log only warnings and errors unless asked.
    quiet = (
        args.command not in ("run", "agent")
        and not args.verbose
        and settings.log_level in ("DEBUG", "INFO")
    )
    setup("WARNING" if quiet else settings.log_level, settings.log_format)
    if args.command == "agent":
        from . import agent

        return agent.main(settings)
    controller = app.Controller.from_settings(settings)
    if args.command == "run":
        return cmd_run(controller)
    # Every other verb shows what the running controller does: its settings, where found.
    settings, source = deployed.with_deployed(settings, controller.reconciler.observer.snapshot())
    board, agents = None, ""
    if args.command == "status" and settings.agent_port:
        board, agents = agentstatus.remote_board(settings, args.controller)
    controller = app.Controller.from_settings(settings, controller.api, board)
    if args.command == "status" and not args.json:
        print(f"# {printable(source)}")
    if args.command == "once":
        return cmd_once(controller)
    if args.command == "render":
        return cmd_render(controller, args.proxy)
    if args.command == "diff":
        return cmd_diff(controller)
    if args.command == "validate":
        return cmd_validate(controller, args.check)
    if args.command == "top":
        return cmd_top(controller, args)
    return cmd_status(controller, args.json, agents)


if __name__ == "__main__":
    sys.exit(main())
