#!/usr/bin/env python3
"""Groups a server's CPU samples by what they are spent on, per delivery.

Reads `perf report --no-children --sort symbol -g none --stdio` on stdin
(self time per symbol) and the load generator's JSON line (argument 1) for
the server CPU-seconds per delivery of the in-flight step, and prints one
markdown table: group, share of the samples, microseconds per delivery,
and the top symbols of the group. Used by scripts/perf-fanout (issue 20
item 0). The first matching rule wins; the order matters.
"""

import json
import re
import sys

# (group, regex on the symbol). Kernel symbols carry "[k]".
RULES = [
    ("signing / stamping", r"\[\.\].*(sha2|hmac|Hmac|Sha256|signed|sign_|_sign\b|stamp|hex::)"),
    ("JSON", r"\[\.\].*(serde_json|serde::|json)"),
    ("copies", r"memmove|memcpy|memset|_copy_from_iter|_copy_to_iter|copy_user|__check_object_size"),
    ("allocation", r"malloc|_int_free|cfree|__libc_free|realloc|alloc::alloc|_int_realloc|kmem_cache|slab|kmalloc|kfree\b"),
    (
        "wake-ups: kernel (epoll, futex, scheduler)",
        r"\[k\] (ep_|epoll|do_epoll|\w*sys_epoll|futex|(__)?schedule$|finish_task_switch|"
        r"try_to_wake_up|ttwu|\w*wake_up|pick_next|enqueue_task|dequeue_task|update_curr|select_task)",
    ),
    (
        "writes: kernel TCP send, incl. loopback delivery to the client",
        r"\[k\]",
    ),
    (
        "writes: WebSocket framing and socket I/O (user side)",
        r"tungstenite|poll_flush|poll_write|__send|__libc_send|__GI___send|TcpStream|sendto|writev|__write|pthread_.*asynccancel|BiLock|Split(Sink|Stream)",
    ),
    (
        "queue ops (outbound queues, frame refcounts, room member lists)",
        r"SessionHandle|outbound|Outbound|queue::|mpsc|chan::|semaphore|shared_drop|bytes::|Arc|spec_from_iter|from_iter|HashMap|hashbrown|broadcast|Registry|fanout|deliver",
    ),
    (
        "wake-ups: tokio (wakers, task polling, timers, notify, cancellation)",
        r"poll_event|Deadlines|tokio|waker|Waker|Notify|notify|Notified|poll_fn|PollFn|cancellation|Sleep|sleep|timer|tracing|Instrumented|select|futures_util|futures_core|run_task|scheduler",
    ),
]


def main():
    step = json.loads(open(sys.argv[1]).readline())
    details = [s for s in step["details"]["steps"] if s.get("in_flight")][0]
    us_per_delivery = details["server_cpu_us_per_delivery"]
    groups = {}
    for line in sys.stdin:
        m = re.match(r"\s*([0-9.]+)%\s+(\[[k.]\])\s+(.*)$", line)
        if not m:
            continue
        share, kind = float(m.group(1)), m.group(2)
        symbol = re.split(r"\s{2,}", m.group(3).strip())[0]
        text = f"{kind} {symbol}"
        group = next((g for g, rule in RULES if re.search(rule, text)), "other (user)")
        entry = groups.setdefault(group, [0.0, []])
        entry[0] += share
        entry[1].append((share, symbol))
    total = sum(v[0] for v in groups.values())
    print(
        f"server CPU per delivery over the step: {us_per_delivery:.2f} µs "
        f"({details['deliveries_per_s']:.0f} deliveries/s, {details['in_flight']} in flight)\n"
    )
    if len(sys.argv) > 3:
        syscalls(sys.argv[2], float(sys.argv[3]), details["deliveries_per_s"])
    print("| where | share of samples | µs per delivery | top symbols |")
    print("|---|---:|---:|---|")
    for group, (share, symbols) in sorted(groups.items(), key=lambda kv: -kv[1][0]):
        top = ", ".join(
            f"`{short(s)}` {p:.1f}%" for p, s in sorted(symbols, reverse=True)[:4]
        )
        print(
            f"| {group} | {100 * share / total:.1f}% | "
            f"{us_per_delivery * share / total:.2f} | {top} |"
        )


def syscalls(path, seconds, deliveries_per_s):
    """Prints the system calls per delivery counted by `perf stat -x,`."""
    counts = []
    for line in open(path):
        fields = line.strip().split(",")
        if len(fields) > 2 and fields[2].startswith("syscalls:"):
            name = fields[2].split("sys_enter_")[-1]
            count = float(fields[0]) if fields[0].replace(".", "").isdigit() else 0.0
            counts.append(f"{name} {count / (deliveries_per_s * seconds):.3f}")
    print(f"system calls per delivery (over {seconds:.0f} s of the step): " + ", ".join(counts) + "\n")


def short(symbol):
    """A symbol without `<… as Trait>` and generics, at most 70 characters."""
    s = re.sub(r"^<(.+?) as .+>::(\w+)$", r"\1::\2", symbol)
    for _ in range(4):
        s = re.sub(r"<[^<>]*>", "", s)
    return s[:70]


if __name__ == "__main__":
    main()
