"""Step 9: the attacks, run for real, judged by the errno the kernel gave each attempt.

Every attack fails in a default container and works with --privileged; labctl's default is never more
open than runc's `runc spec` default on the same root filesystem; the denied-call tracer sees what the
seccomp filter refused. Attacks the running kernel was built without (no /proc/kcore, no module loader
on this host; the VM tier has both) are absent, and each test says which it could not judge.
"""
from __future__ import annotations

import shutil

import pytest

from labctl.demos import attacks

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="module")
def default_outcomes():
    return attacks.run_in_labctl(attacks.default_profile())


@pytest.fixture(scope="module")
def privileged_outcomes():
    return attacks.run_in_labctl(attacks.privileged())


def present(*outcome_maps) -> list[str]:
    """The attacks every map judged (not absent from the kernel)."""
    return [a for a in attacks.ATTACKS if all(a in m and m[a].ok is not None for m in outcome_maps)]


def test_every_attack_fails_in_a_default_container(default_outcomes):
    judged = present(default_outcomes)
    assert {"disk", "mount", "procsys", "userns", "clock", "setuid"} <= set(judged), default_outcomes
    worked = {a: default_outcomes[a].text for a in judged if default_outcomes[a].ok}
    assert not worked, f"attacks that worked in a default container: {worked}"
    # stopped where each defence stops it, with the errno the kernel gives
    assert default_outcomes["disk"].call == "open" and default_outcomes["disk"].errno == "EPERM"   # devices
    assert default_outcomes["mount"].errno == "EPERM"
    assert default_outcomes["procsys"].errno == "EROFS"                                              # read-only
    assert default_outcomes["userns"].errno == "EPERM"                                               # seccomp
    assert default_outcomes["clock"].errno == "EPERM"
    assert default_outcomes["setuid"].errno == f"euid stays {attacks.PLANT_UID}"                     # nnp


def test_every_attack_works_with_privileged(privileged_outcomes):
    judged = present(privileged_outcomes)
    stopped = {a: privileged_outcomes[a].text for a in judged if not privileged_outcomes[a].ok}
    assert not stopped, f"attacks stopped even in a --privileged container: {stopped}"


def test_each_defence_added_stops_the_attacks_it_is_for():
    """The matrix the step 9 plot draws: added one at a time to a --privileged container, each defence
    stops attacks that worked the column before."""
    expect = {"device allowlist": {"disk"}, "masked paths": {"procsys", "sysrq", "kcore"},
              "no_new_privs": {"setuid"}, "capabilities": {"mount", "clock", "module"}, "seccomp": {"userns"}}
    columns = list(attacks.matrix().items())
    for (_, before), (name, after) in zip(columns, columns[1:]):
        for attack in expect.get(name.removeprefix("+ "), ()):
            if after[attack].ok is None or before[attack].ok is None:
                continue   # absent from this kernel
            assert before[attack].ok and after[attack].ok is False, \
                f"{name}: {attack} was {before[attack].text}, then {after[attack].text}"
    last = columns[-1][1]
    assert not [a for a in present(last) if last[a].ok], last


@pytest.mark.skipif(shutil.which("runc") is None, reason="runc is not installed")
def test_labctl_default_is_never_more_open_than_runc_spec(default_outcomes):
    runc = attacks.run_in_runc()
    judged = present(default_outcomes, runc)
    assert judged, "no attack could be judged in both"
    more_open = [a for a in judged if default_outcomes[a].ok and not runc[a].ok]
    assert not more_open, {a: (default_outcomes[a].text, runc[a].text) for a in more_open}


def test_denied_tracer_sees_what_the_filter_refused():
    events = attacks.denied_calls(("mount", "userns", "clock"))
    denied = {(ev["syscall"], ev["errno"]) for ev in events}
    assert {("mount", "EPERM"), ("unshare", "EPERM"), ("settimeofday", "EPERM")} <= denied, denied
    assert all(ev["comm"] in ("attacker", "sh", "sleep") for ev in events), events
