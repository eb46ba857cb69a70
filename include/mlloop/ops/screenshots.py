"""Headless-Chromium screenshots of the Airflow 3 UI and the MLflow UI, to look at what a person sees.

It starts a headless Chromium and drives it over the Chrome DevTools protocol on a pipe
(``--remote-debugging-pipe``), so it needs nothing beyond the standard library and a Chromium binary
(on Debian: ``apt-get install -y chromium``; or pass ``--chromium PATH`` / set ``CHROMIUM``). It signs
in to Airflow through its own login page (Simple auth manager or FAB: both have ``username`` and
``password`` inputs), then saves PNGs of:

- ``airflow_dags.png``: the DAG list, paused ones included, as a table (``--dag-tag`` filters by tag);
- ``airflow_trigger_<dag>.png``: the trigger form of ``--trigger-dag`` (its page, *Trigger* button),
  opened only, never submitted; the viewport grows to fit the whole form;
- ``mlflow_models.png``: the MLflow registered models page (``/#/models``), when ``--mlflow`` is given;

and prints each path. It exits 1, naming the step, when a page does not show what it waits for (a
``<name>_error.png`` of that moment is kept).

Run it against a running stack (``make up``; the password is ``MLLOOP_AIRFLOW_PASSWORD`` in ``.env``, or
``.airflow/passwords.json``; ``--password-file`` reads either, or a file holding just the password)::

    mlloop screenshots --airflow http://127.0.0.1:8080 --user admin \\
        --password-file .env --mlflow http://127.0.0.1:5000 --out shots \\
        --dag-tag flight_delay --trigger-dag ingest_flight_delay
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote, urlencode

CHROMIUM_NAMES = (
    "chromium",
    "chromium-browser",
    "chromium-headless-shell",
    "headless_shell",
    "google-chrome",
)
LOGIN_INPUTS = "input[name=username]"


class PageTimeout(RuntimeError):
    """A page did not reach the state the script waited for."""


class Chromium:
    """One headless Chromium, spoken to over the DevTools protocol on fds 3 and 4 (NUL-framed JSON)."""

    def __init__(self, binary: str, width: int, height: int, timeout: float) -> None:
        """Start the browser with its own throw-away profile and attach to its first page."""
        self.width, self.height, self.timeout = width, height, timeout
        self._profile = tempfile.TemporaryDirectory(prefix="ui-shots-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def child_fds() -> None:  # in the child: the browser reads commands on fd 3, answers on fd 4
            read_end, write_end = os.dup(to_browser_r), os.dup(from_browser_w)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        argv = [
            binary,
            "--headless",
            "--remote-debugging-pipe",
            f"--user-data-dir={self._profile.name}",
            f"--window-size={width},{height}",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--lang=en-US",
            "about:blank",
        ]
        if os.geteuid() == 0:
            argv.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=False,  # fds 3/4 are set up in child_fds; Python's own fds are not inheritable
            preexec_fn=child_fds,  # the script is single-threaded
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self._session: str | None = None
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.resize(width, height)

    def call(self, method: str, **params: object) -> dict:
        """Send one command and return its result (events in between are dropped)."""
        self._next_id += 1
        message: dict[str, object] = {"id": self._next_id, "method": method, "params": params}
        if self._session and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self._session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            while b"\0" in self._buffer:
                raw, _, self._buffer = self._buffer.partition(b"\0")
                reply = json.loads(raw)
                if reply.get("id") == self._next_id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply.get("result", {})
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._proc.poll() is not None:
                raise RuntimeError(f"{method}: no answer from Chromium")
            ready, _, _ = select.select([self._from_browser], [], [], remaining)
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"{method}: Chromium closed the pipe")
                self._buffer += chunk

    def resize(self, width: int, height: int) -> None:
        """Set the viewport's size in CSS pixels."""
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    def evaluate(self, expression: str) -> object:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript error: {result['exceptionDetails'].get('text')}: {expression}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, what: str, timeout: float | None = None) -> object:
        """Poll a JavaScript expression until it is truthy; PageTimeout names `what` otherwise."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            with contextlib.suppress(RuntimeError):  # a navigation can destroy the context mid-call
                value = self.evaluate(expression)
                if value:
                    return value
            if time.monotonic() > deadline:
                raise PageTimeout(f"timed out waiting for {what} (url {self.url()})")
            time.sleep(0.25)

    def goto(self, url: str) -> None:
        """Navigate to ``url``."""
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'", f"{url} to load")

    def url(self) -> str:
        """Return the page's current URL."""
        with contextlib.suppress(RuntimeError):
            return str(self.evaluate("location.href"))
        return "?"

    def type_into(self, selector: str, text: str) -> None:
        """Focus an input and type into it as a keyboard would (React sees real input events)."""
        self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " e.focus(); e.select(); return true; })()"
        )
        self.call("Input.insertText", text=text)

    def click_text(self, selector: str, pattern: str, what: str) -> None:
        """Click the first visible element matching `selector` whose text or aria-label matches /pattern/i."""
        script = f"""(() => {{
            const re = new RegExp({json.dumps(pattern)}, "i");
            for (const e of document.querySelectorAll({json.dumps(selector)})) {{
                const label = (e.innerText || "") + " " + (e.getAttribute("aria-label") || "");
                const box = e.getBoundingClientRect();
                if (re.test(label) && box.width > 0 && box.height > 0 && !e.disabled) {{
                    e.click(); return true;
                }}
            }}
            return false;
        }})()"""
        self.wait_for(script, what)

    def screenshot(self, path: Path, settle: float = 1.0) -> Path:
        """Wait ``settle`` seconds for rendering, then save the viewport as a PNG; return ``path``."""
        time.sleep(settle)  # let transitions and late renders finish
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        """Close the browser and remove its profile."""
        with contextlib.suppress(Exception):
            self.call("Browser.close")
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)
        self._profile.cleanup()


def find_chromium(explicit: str | None) -> str:
    """The Chromium binary: --chromium, $CHROMIUM, or the first known name on PATH."""
    for candidate in (explicit, os.environ.get("CHROMIUM")):
        if candidate:
            return candidate
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    sys.exit("no Chromium found: apt-get install -y chromium, or pass --chromium PATH")


def read_password(path: Path, user: str) -> str:
    """The password from a plain file, a Simple-auth-manager passwords.json, or a dotenv file."""
    text = path.read_text().strip()
    with contextlib.suppress(ValueError):
        data = json.loads(text)
        if isinstance(data, dict) and user in data:
            return str(data[user])
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key.strip() in ("MLLOOP_AIRFLOW_PASSWORD", "AIRFLOW_PASSWORD"):
            return value.strip().strip("'\"")
    return text.splitlines()[0].strip() if text else ""


def airflow_login(browser: Chromium, base: str, user: str, password: str) -> None:
    """Open the UI; when it shows a login form, fill it in and wait for the app to come back."""
    browser.goto(f"{base}/")
    state = browser.wait_for(
        f"document.querySelector({json.dumps(LOGIN_INPUTS)}) ? 'login'"
        " : (document.querySelector('nav, [role=navigation]') ? 'in' : '')",
        "the Airflow login page or the app",
    )
    if state == "in":
        return  # no login needed (e.g. simple_auth_manager_all_admins)
    browser.type_into(LOGIN_INPUTS, user)
    browser.type_into("input[name=password]", password)
    browser.click_text("button[type=submit], input[type=submit]", ".", "an enabled sign-in button")
    outcome = browser.wait_for(
        "/invalid credentials|401 unauthorized/i.test(document.body.innerText || '') ? 'refused'"
        f" : (!document.querySelector({json.dumps(LOGIN_INPUTS)}) && !location.pathname.includes('/login')"
        " && document.readyState === 'complete' ? 'in' : '')",
        "the login to be accepted",
    )
    if outcome == "refused":
        raise RuntimeError(f"Airflow refused the login of {user!r}: check --user and --password-file")


def shot_dag_list(browser: Chromium, base: str, out: Path, tag: str | None) -> Path:
    """Save the DAG list (paused ones too, as a table, filtered by ``tag``); return the PNG's path."""
    # Table view (the card view shows few rows); usehooks-ts keeps the choice as JSON in localStorage.
    browser.evaluate("localStorage.setItem('dags_list_display', JSON.stringify('table'))")
    params = [("paused", "all"), ("limit", "50")] + ([("tags", tag)] if tag else [])
    browser.goto(f"{base}/dags?{urlencode(params)}")
    browser.wait_for("document.querySelectorAll('a[href*=\"/dags/\"]').length > 0", "DAG links in the list")
    browser.wait_for(
        "!document.querySelector('.chakra-skeleton, [data-scope=skeleton]')", "the list to load", 20
    )
    return browser.screenshot(out / "airflow_dags.png")


def shot_trigger_form(browser: Chromium, base: str, out: Path, dag_id: str) -> Path:
    """Open ``dag_id``'s trigger form (never submitted), grow the viewport to fit it, save it."""
    browser.goto(f"{base}/dags/{quote(dag_id)}")
    browser.click_text("button", "^\\s*trigger", f"the Trigger button of {dag_id}")
    dialog = "document.querySelector('[role=dialog][data-state=open], [role=dialog]:not([data-state])')"
    browser.wait_for(
        f"{dialog} && {dialog}.querySelectorAll('input, textarea, select').length > 0",
        "the trigger form with its fields",
    )
    time.sleep(1.0)  # the form's params render after the DAG's details arrive
    # Grow the viewport to the dialog's full height so every field is in one image; never submit.
    height = browser.evaluate(
        f"Math.max({dialog}.scrollHeight + 160,"
        " ...[...document.querySelectorAll('[data-scope=dialog][data-part=positioner]')]"
        ".map(e => e.scrollHeight))"
    )
    if isinstance(height, int | float) and height > browser.height:
        browser.resize(browser.width, min(int(height), 4000))
    path = browser.screenshot(out / f"airflow_trigger_{dag_id}.png")
    browser.resize(browser.width, browser.height)
    return path


# MLflow's first-visit extras that would cover the list: the "new Model Registry UI" promo and the
# Assistant side panel. Their flags live in localStorage; the close buttons are the fallback.
MLFLOW_QUIET = {
    "_mlflow_user_setting_dismiss_next_model_registry_ui": "true",
    "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true",
    "mlflow.assistant.panelOpen_v1": "false",
}
MLFLOW_CLOSE = (
    "[...document.querySelectorAll('[class*=modal-wrap] button[aria-label=Close],"
    ' button[data-component-id="mlflow.assistant.chat_panel.close"]\')]'
    ".filter(e => e.getBoundingClientRect().width > 0).forEach(e => e.click())"
)


def shot_mlflow_models(browser: Chromium, base: str, out: Path) -> Path:
    """Save MLflow's registered models page, its first-visit pop-ups closed; return the PNG's path."""
    browser.goto(f"{base}/")
    for key, value in MLFLOW_QUIET.items():
        browser.evaluate(f"localStorage.setItem({json.dumps(key)}, {json.dumps(value)})")
    browser.goto(f"{base}/#/models")
    browser.call("Page.reload")  # a hash change alone does not reload the app with the flags set
    time.sleep(0.5)
    browser.wait_for("document.readyState === 'complete'", "the MLflow app to reload")
    browser.wait_for(
        "/registered models/i.test(document.body.innerText || '')"
        " && document.querySelectorAll('table, [role=table], [role=grid]').length > 0",
        "the MLflow registered models table",
    )
    time.sleep(1.5)  # the promo modal, if still shown, opens a moment after the list
    browser.evaluate(MLFLOW_CLOSE)
    return browser.screenshot(out / "mlflow_models.png", settle=1.0)


def main(argv: list[str] | None = None) -> int:
    """Sign in, save each screenshot and print its path; exit 1 naming the step that failed."""
    parser = argparse.ArgumentParser(
        prog="python -m mlloop.ops.screenshots", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--airflow", default="http://127.0.0.1:8080", help="Airflow base URL")
    parser.add_argument("--user", default="admin")
    parser.add_argument("--password-file", type=Path, help="password, passwords.json or .env file")
    parser.add_argument("--mlflow", help="MLflow base URL (models page skipped without it)")
    parser.add_argument("--out", type=Path, default=Path("shots"))
    parser.add_argument("--dag-tag", help="show only DAGs with this tag in the list")
    parser.add_argument("--trigger-dag", help="DAG id whose trigger form to capture")
    parser.add_argument("--chromium", help="Chromium binary (default: $CHROMIUM or found on PATH)")
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--height", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each page")
    args = parser.parse_args(argv)

    password = read_password(args.password_file, args.user) if args.password_file else ""
    args.out.mkdir(parents=True, exist_ok=True)
    airflow = args.airflow.rstrip("/")
    browser = Chromium(find_chromium(args.chromium), args.width, args.height, args.timeout)
    steps = [("airflow_login", lambda: airflow_login(browser, airflow, args.user, password))]
    steps.append(("airflow_dags", lambda: shot_dag_list(browser, airflow, args.out, args.dag_tag)))
    if args.trigger_dag:
        steps.append(
            ("airflow_trigger", lambda: shot_trigger_form(browser, airflow, args.out, args.trigger_dag))
        )
    if args.mlflow:
        steps.append(
            ("mlflow_models", lambda: shot_mlflow_models(browser, args.mlflow.rstrip("/"), args.out))
        )
    try:
        for name, step in steps:
            try:
                path = step()
            except (PageTimeout, RuntimeError) as exc:
                with contextlib.suppress(RuntimeError):
                    browser.screenshot(args.out / f"{name}_error.png", settle=0)
                print(f"{name}: {exc}", file=sys.stderr)
                return 1
            if path:
                print(path)
    finally:
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
