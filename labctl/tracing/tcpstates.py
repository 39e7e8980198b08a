"""TCP connection state changes of one container, like bcc's tcpstates.

    labctl trace 4242 --net
    TIME(s)  PID    COMM             LADDR:LPORT          RADDR:RPORT          OLD -> NEW
       0.010 4251   nc               127.0.0.1:0          127.0.0.1:8080       CLOSE -> SYN_SENT
       0.010 4251   nc               127.0.0.1:40022      127.0.0.1:8080       SYN_SENT -> ESTABLISHED

sock:inet_sock_set_state fires for every change of a socket's state. Many changes happen in
softirq context (a packet arrived), on behalf of whatever task the CPU was running, so "the current
task is in the container" does not say whose socket it is. What does: only connect(2) (CLOSE ->
SYN_SENT) and listen(2) (CLOSE -> LISTEN) change a socket from CLOSE, and they run in the owner's
own task. The program remembers those sockets (by address) and follows them to CLOSE; connections
accepted on a port the container listens on are adopted by their local port.
"""
from __future__ import annotations

import ipaddress
import socket

from labctl.tracing.tracer import Tracer

PROGRAM = r"""
#define IPPROTO_TCP_ 6
enum { ESTABLISHED = 1, SYN_SENT, SYN_RECV, FIN_WAIT1, FIN_WAIT2, TIME_WAIT, CLOSE, CLOSE_WAIT,
       LAST_ACK, LISTEN, CLOSING, NEW_SYN_RECV };
struct event_t {
    u64 ts;
    s32 slot;
    u32 pid;            /* the task the CPU ran: the owner, or anyone in softirq context */
    s32 oldstate;
    s32 newstate;
    u16 family;
    u16 sport;
    u16 dport;
    u16 pad;
    char comm[16];
    u8 saddr[16];       /* IPv4 in the first 4 bytes */
    u8 daddr[16];
};
BPF_RINGBUF_OUTPUT(events, 64);
BPF_HASH(ours, u64, s32, 4096);        /* socket address -> slot of the container that owns it */
BPF_HASH(listening, u16, s32, 1024);   /* local port a container listens on -> its slot */

int lab_tcp_state(struct tracepoint__sock__inet_sock_set_state *args)
{
    if (args->protocol != IPPROTO_TCP_)
        return 0;
    u64 sk = (u64)args->skaddr;
    u16 sport = args->sport;
    s32 slot = -1;
    s32 *known = ours.lookup(&sk);
    if (known) {
        slot = *known;
    } else if (args->oldstate == CLOSE &&
               (args->newstate == SYN_SENT || args->newstate == LISTEN)) {
        struct bpf_pidns_info ns = {};
        slot = scope_slot(&ns);          /* connect() or listen(), in the owner's task */
    } else if (args->oldstate == LISTEN && args->newstate == SYN_RECV) {
        s32 *port_owner = listening.lookup(&sport);   /* a connection accepted on its port */
        if (port_owner)
            slot = *port_owner;
    }
    if (slot < 0)
        return 0;
    if (args->newstate == CLOSE) {
        ours.delete(&sk);
        if (args->oldstate == LISTEN)
            listening.delete(&sport);
    } else {
        ours.update(&sk, &slot);
        if (args->newstate == LISTEN)
            listening.update(&sport, &slot);
    }
    struct event_t *e = events.ringbuf_reserve(sizeof(struct event_t));
    if (!e)
        return 0;
    e->ts = bpf_ktime_get_ns();
    e->slot = slot;
    e->pid = bpf_get_current_pid_tgid() >> 32;
    e->oldstate = args->oldstate;
    e->newstate = args->newstate;
    e->family = args->family;
    e->sport = sport;
    e->dport = args->dport;
    e->pad = 0;
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    if (args->family == 2) {             /* AF_INET */
        __builtin_memset(e->saddr, 0, 16);
        __builtin_memset(e->daddr, 0, 16);
        __builtin_memcpy(e->saddr, args->saddr, 4);
        __builtin_memcpy(e->daddr, args->daddr, 4);
    } else {
        __builtin_memcpy(e->saddr, args->saddr_v6, 16);
        __builtin_memcpy(e->daddr, args->daddr_v6, 16);
    }
    events.ringbuf_submit(e, 0);
    return 0;
}
"""

STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT",
          7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING", 12: "NEW_SYN_RECV"}


def _address(family: int, raw: list[int]) -> str:
    data = bytes(raw)
    if family == socket.AF_INET:
        return str(ipaddress.IPv4Address(data[:4]))
    return str(ipaddress.IPv6Address(data[:16]))


class TcpStateTracer(Tracer):
    """TCP state changes of the watched containers' sockets."""
    NAME = "net"
    PROGRAM = PROGRAM
    TRACEPOINTS = {"sock:inet_sock_set_state": "lab_tcp_state"}
    HEADER = f"{'TIME(s)':>8} {'PID':<7} {'COMM':<16} {'LADDR:LPORT':<22} {'RADDR:RPORT':<22} OLD -> NEW"

    def on_scopes_changed(self) -> None:
        self.bpf["ours"].clear()
        self.bpf["listening"].clear()

    def event(self, raw: dict) -> dict:
        return {"ts": raw["ts"], "event": "tcp", "container": self.label(raw["slot"]), "slot": raw["slot"],
                "pid": raw["pid"], "comm": raw["comm"],
                "old": STATES.get(raw["oldstate"], str(raw["oldstate"])),
                "new": STATES.get(raw["newstate"], str(raw["newstate"])),
                "laddr": _address(raw["family"], raw["saddr"]), "lport": raw["sport"],
                "raddr": _address(raw["family"], raw["daddr"]), "rport": raw["dport"]}

    @staticmethod
    def format(ev: dict, start_ns: int) -> str:
        local, remote = f"{ev['laddr']}:{ev['lport']}", f"{ev['raddr']}:{ev['rport']}"
        return (f"{(ev['ts'] - start_ns) / 1e9:8.3f} {ev['pid']:<7} {ev['comm']:<16} {local:<22} {remote:<22} "
                f"{ev['old']} -> {ev['new']}")
