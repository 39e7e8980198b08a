"""Jupyter as a student meets it: the VM's Jupyter refuses whoever lacks its token, listens on one address,
and in a real browser (Debian's chromium, driven through chromedriver by selenium) lists the lab's
notebooks, opens one, runs it to the end and shows its figure; a screenshot of it is kept as an artifact.

Two targets, one set of tests:
- with LABCTL_JUPYTER_SERVICE=1 (the VM tier, tests/test_vm.py, runs this file in the guest): the VM's own
  labctl-jupyter.service on 127.0.0.1:8888, with the token it made at boot in /etc/labctl/jupyter-token;
- elsewhere: `labctl jupyter serve`, the command the service runs, started here on a free port with a
  token file of its own, serving a copy of notebooks/ (the browser's autosave must not write outputs
  into the repository).

Screenshots go to $LABCTL_ARTIFACTS (default /tmp/labctl-artifacts); each test prints the path.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from conftest import SESSION_PIDS
from labctl import jupyter

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
#: Quick (namespaces only: about 5 s on this host, 1-2 min in the VM under TCG) and it draws a figure.
NOTEBOOK = "01-namespaces.ipynb"
ON_SERVICE = os.environ.get("LABCTL_JUPYTER_SERVICE") == "1"
ARTIFACTS = Path(os.environ.get("LABCTL_ARTIFACTS", "/tmp/labctl-artifacts"))
#: Each wait of the browser test, in seconds; the VM's emulated CPU needs minutes for what takes seconds here.
BROWSER_TIMEOUT = float(os.environ.get("LABCTL_BROWSER_TIMEOUT", "600" if ON_SERVICE else "120"))
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def _get(url: str, headers: dict | None = None) -> tuple[int, str, bytes]:
    """(status, Location, body) of one GET, redirects not followed: what the server answered itself."""
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args):
            return None
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=60) as resp:
            return resp.status, resp.headers.get("Location", ""), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Location", ""), exc.read()


def _wait_until_serving(base: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"`labctl jupyter serve` exited with status {proc.returncode}")
        try:
            if _get(base + "/api/status")[0] in (200, 403):
                return
        except OSError:
            pass
        time.sleep(1)
    raise AssertionError(f"Jupyter did not answer at {base} within {timeout:.0f} s")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The Jupyter under test: base URL, token, token file, listen address, notebook directory."""
    if ON_SERVICE:
        base = f"http://127.0.0.1:{jupyter.PORT}"
        _wait_until_serving(base, BROWSER_TIMEOUT)
        yield SimpleNamespace(base=base, ip="127.0.0.1", port=jupyter.PORT, token_file=jupyter.TOKEN_FILE,
                              token=jupyter.read_token(), notebook_dir=NOTEBOOKS)
        return
    tmp = tmp_path_factory.mktemp("jupyter")
    notebook_dir = tmp / "notebooks"
    shutil.copytree(NOTEBOOKS, notebook_dir, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token_file = tmp / "etc" / "jupyter-token"
    proc = subprocess.Popen([sys.executable, "-m", "labctl", "jupyter", "serve", "--port", str(port),
                             "--notebook-dir", str(notebook_dir), "--token-file", str(token_file)],
                            stdout=subprocess.DEVNULL, stderr=open(tmp / "jupyter.log", "w"))
    SESSION_PIDS.add(proc.pid)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_until_serving(base, 60, proc)
        yield SimpleNamespace(base=base, ip="127.0.0.1", port=port, token_file=token_file,
                              token=jupyter.read_token(token_file), notebook_dir=notebook_dir)
    finally:
        proc.terminate()   # Jupyter shuts its kernels down on SIGTERM
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        SESSION_PIDS.discard(proc.pid)


# -- the token ---------------------------------------------------------------------------------------


def test_requests_without_the_token_or_with_a_wrong_one_are_refused(server):
    wrong = "0" * len(server.token)
    api = server.base + "/api/contents"
    assert _get(api)[0] == 403, "the API answered without a token"
    assert _get(f"{api}?token={wrong}")[0] == 403, "the API answered a wrong token"
    assert _get(api, {"Authorization": f"token {wrong}"})[0] == 403, "the API answered a wrong token header"
    assert _get(server.base + "/api/kernels")[0] == 403, "the kernel list answered without a token"
    # The page a browser opens sends whoever lacks the token to the login form.
    for query in ("", f"?token={wrong}"):
        status, location, _ = _get(server.base + "/tree" + query)
        assert status == 302 and location.startswith("/login"), (status, location)
    # With it: the notebook list, by the API and as the page.
    status, _, body = _get(f"{api}?token={server.token}")
    assert status == 200
    names = {item["name"] for item in json.loads(body)["content"]}
    assert NOTEBOOK in names
    assert _get(f"{server.base}/tree?token={server.token}")[0] == 200
    assert _get(api, {"Authorization": f"token {server.token}"})[0] == 200


def test_the_token_is_random_and_root_only(server):
    info = os.stat(server.token_file)
    assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == 0, oct(info.st_mode)
    raw = Path(server.token_file).read_bytes()
    assert len(raw) == 48 and int(raw, 16) >= 0, "48 hex digits (192 bits), no newline: Jupyter reads it verbatim"
    if ON_SERVICE:   # made on this VM's first boot, not carried in the image it booted from
        boot_time = psutil.boot_time()
        assert info.st_mtime >= boot_time - 1, f"token older than this boot ({info.st_mtime} < {boot_time})"


def test_the_token_is_nowhere_on_jupyters_command_line(server):
    """/proc/PID/cmdline is readable by every user of the machine; the token comes from a root-only file."""
    listeners = _listening_pids(server.port)
    assert listeners, f"no process listens on port {server.port}"
    for pid in listeners:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
        assert server.token not in cmdline
        assert "JUPYTER_TOKEN_FILE=" in Path(f"/proc/{pid}/environ").read_bytes().decode()


def test_labctl_jupyter_url_prints_the_url_that_opens_jupyter(server):
    out = subprocess.run([sys.executable, "-m", "labctl", "jupyter", "url", "--port", str(server.port),
                          *([] if ON_SERVICE else ["--token-file", str(server.token_file)])],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == f"http://127.0.0.1:{server.port}/?token={server.token}"
    status, location, _ = _get(out)
    assert status == 302 and location.startswith("/tree"), (status, location)   # not to the login form


# -- where it listens --------------------------------------------------------------------------------


def _listening_sockets(port: int) -> list[str]:
    """The local addresses of the kernel's TCP sockets in LISTEN on `port` (/proc/net/tcp, tcp6)."""
    return [c.laddr.ip for c in psutil.net_connections("tcp")   # "tcp": IPv4 and IPv6
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port]


def _listening_pids(port: int) -> set[int]:
    return {c.pid for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN
            and c.laddr.port == port and c.pid}


def test_jupyter_listens_on_one_address_only(server):
    assert _listening_sockets(server.port) == [server.ip], \
        f"port {server.port} listens on {_listening_sockets(server.port)}, not on {server.ip} alone"
    # Another address of this machine (the VM's NAT interface, this host's own): connect(2) is refused.
    others = [a.address for addrs in psutil.net_if_addrs().values() for a in addrs
              if a.family == socket.AF_INET and a.address != server.ip and not a.address.startswith("127.")]
    if not others:
        pytest.skip("this machine has no IPv4 address but loopback")
    with socket.socket() as s:
        s.settimeout(10)
        assert s.connect_ex((others[0], server.port)) == errno.ECONNREFUSED


def test_serve_refuses_every_interface():
    result = subprocess.run([sys.executable, "-m", "labctl", "jupyter", "serve", "--ip", "0.0.0.0",
                             "--token-file", "/nonexistent/token"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "every interface" in result.stderr and "fix:" in result.stderr and "Traceback" not in result.stderr
    assert not Path("/nonexistent/token").exists()


@pytest.mark.root(False)
def test_ensure_token_makes_one_token_once(tmp_path):
    path = tmp_path / "labctl" / "jupyter-token"
    first = jupyter.ensure_token(path)
    assert jupyter.ensure_token(path) == first and path.read_text() == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["jupyter-token"], "a temporary file was left"
    other = jupyter.ensure_token(tmp_path / "other")
    assert other != first and len(other) == 48


# -- in a browser ------------------------------------------------------------------------------------


@pytest.fixture
def browser(server):
    """Headless chromium through chromedriver; the kernels the page starts are shut down afterwards."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="python3-selenium is not installed")
    from selenium.webdriver.chrome.service import Service
    for program in (CHROMIUM, CHROMEDRIVER):
        if not os.access(program, os.X_OK) and not ON_SERVICE:
            pytest.skip(f"{program} is not installed (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # --no-sandbox: chromium's sandbox refuses to run as root, and the tests run as root.
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,2000"):
        options.add_argument(arg)
    kernels_before = _kernel_ids(server)
    # "eager": get() returns at DOMContentLoaded; what the test needs next (the listing, the notebook, the
    # kernel) is waited for element by element, each with its own timeout and a screenshot when it fails.
    # Under the VM's emulated CPU, "normal" (every subresource loaded) once took longer than 600 s.
    options.page_load_strategy = "eager"
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(BROWSER_TIMEOUT)
    try:
        yield driver
    finally:
        driver.quit()
        for kernel in _kernel_ids(server) - kernels_before:
            req = urllib.request.Request(f"{server.base}/api/kernels/{kernel}", method="DELETE",
                                         headers={"Authorization": f"token {server.token}"})
            urllib.request.urlopen(req, timeout=60).close()


def _kernel_ids(server) -> set[str]:
    status, _, body = _get(f"{server.base}/api/kernels?token={server.token}")
    assert status == 200
    return {k["id"] for k in json.loads(body)}


def _wait(driver, what: str, condition, poll: float = 1):
    from selenium.webdriver.support.ui import WebDriverWait
    from selenium.common.exceptions import TimeoutException
    try:
        return WebDriverWait(driver, BROWSER_TIMEOUT, poll_frequency=poll).until(lambda d: condition(d))
    except TimeoutException:
        shot = _screenshot(driver, "jupyter-timeout")
        raise AssertionError(f"timed out after {BROWSER_TIMEOUT:.0f} s waiting for {what} (screenshot {shot})")


def _screenshot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


@pytest.fixture
def notebook_kept(server):
    """The notebook as it was, put back once the browser is closed (set up before `browser`, so torn
    down after it): the page's autosave writes the outputs of the run into the file."""
    path = server.notebook_dir / NOTEBOOK
    original = path.read_bytes()
    yield path
    if path.read_bytes() != original:
        path.write_bytes(original)


def test_a_notebook_runs_to_the_end_in_a_browser(server, notebook_kept, browser, capsys):
    from selenium.webdriver.common.by import By
    started = time.monotonic()
    # The start page with the token, as `labctl jupyter url` prints it: the notebook list.
    browser.get(jupyter.url(server.token, port=server.port))
    listed = _wait(browser, "the notebook list", lambda d: {e.text for e in
                   d.find_elements(By.CSS_SELECTOR, ".jp-DirListing-itemText")} >= {NOTEBOOK} and
                   [e.text for e in d.find_elements(By.CSS_SELECTOR, ".jp-DirListing-itemText")])
    assert {p.name for p in server.notebook_dir.glob("*.ipynb")} <= set(listed), listed
    # A click on its name opens it in a new tab (Notebook 7), whose kernel starts and reports idle.
    tabs = set(browser.window_handles)
    next(e for e in browser.find_elements(By.CSS_SELECTOR, ".jp-DirListing-itemText") if e.text == NOTEBOOK).click()
    new = _wait(browser, "the notebook's tab", lambda d: set(d.window_handles) - tabs)
    browser.switch_to.window(new.pop())
    # Every code cell of the file on the page (the page renders them a few at a time: stop 24's CI counted
    # 4 of 5 at the kernel's first idle), and the kernel idle.
    cells = sum(c["cell_type"] == "code" for c in json.loads(notebook_kept.read_text())["cells"])
    _wait(browser, "the kernel and every code cell", lambda d: _indicator(d) == "idle" and
          len(d.find_elements(By.CSS_SELECTOR, ".jp-CodeCell")) == cells)
    # Run > Run All Cells, as a student does. Every cell is queued at once ([*]), the kernel turns busy.
    next(e for e in browser.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-itemLabel") if e.text == "Run").click()
    _wait(browser, "the Run menu", lambda d: [e for e in d.find_elements(By.CSS_SELECTOR, ".lm-Menu-itemLabel")
                                              if e.text == "Run All Cells"])[0].click()
    _wait(browser, "the cells to be queued", lambda d: _indicator(d) == "busy" or "[*]:" in _prompts(d), poll=0.1)
    # Done: the kernel idle and no cell waiting ([*]); Run All stops at an error, leaving [ ] behind.
    prompts = _wait(browser, "the run to end", lambda d: _finished(d))
    ran = time.monotonic() - started
    images = browser.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output img")
    if images:
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", images[0])
    shot = _screenshot(browser, f"jupyter-{Path(NOTEBOOK).stem}")
    with capsys.disabled():
        print(f"\n[jupyter] {NOTEBOOK} ran in the browser: {cells} code cells, {len(images)} figure(s), "
              f"{ran:.0f} s from the start page; screenshot {shot}")
    errors = [e.text[:400] for e in browser.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output")
              if "Traceback (most recent call last)" in e.text]
    assert not errors, errors
    assert len(prompts) == cells and all(p.strip("[]: ").isdigit() for p in prompts), prompts
    assert images and images[0].size["width"] > 100, "no figure in the outputs"
    assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", images[0]) > 100


def _indicator(driver) -> str | None:
    from selenium.webdriver.common.by import By
    found = driver.find_elements(By.CSS_SELECTOR, ".jp-Notebook-ExecutionIndicator")
    return found[0].get_attribute("data-status") if found else None


def _prompts(driver) -> list[str]:
    """Each code cell's prompt: [ ]: never run, [*]: queued or running, [3]: the third execution."""
    from selenium.webdriver.common.by import By
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".jp-CodeCell .jp-InputPrompt")]


def _finished(driver) -> list[str] | None:
    """The code cells' prompts once the run is over, else None."""
    prompts = _prompts(driver)
    done = _indicator(driver) == "idle" and "[*]:" not in prompts and any(p.strip("[]: ").isdigit() for p in prompts)
    return prompts if done else None
