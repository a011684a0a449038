#!/usr/bin/env python3
"""dtc's benchmark runner (scripts/bench.sh calls it; see there for usage).

Measures, on a fresh release cluster, for each concurrency: committed txn/s, latency
percentiles, CPU µs per committed txn for every process (from /proc/PID/stat, the client's
from its rusage), fsyncs and gRPC messages per committed txn (from `dtc status` and the
client's own count), and whether `dtc check` passes;
then a run that kills the leader of most partitions mid-load, as committed txn/s over time.
The machine's own limits (durable LMDB commits/s, gRPC stream messages/s) are measured in the
same run. Writes REPORT.json and a self-contained report.html with SVG charts.
"""
import argparse, html, json, os, platform, re, shutil, subprocess, sys, time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def say(message):
    print(f"[bench] {message}", file=sys.stderr, flush=True)


class Bench:
    def __init__(self, args):
        self.args = args
        self.root = args.root
        self.bin = args.bin
        self.out = os.path.abspath(args.out)
        self.run_dir = os.path.join(self.out, "run")
        self.config = os.path.join(self.run_dir, "cluster.json")

    # --- the cluster -------------------------------------------------------------------

    def write_config(self):
        # A fresh cluster every run: the data and logs of an earlier one go (and its processes,
        # if it was left running).
        if os.path.exists(os.path.join(self.run_dir, "run", "pids")):
            subprocess.run([os.path.join(self.root, "scripts", "cluster.sh"), "--config", self.config, "down"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(os.path.join(self.run_dir, "run"), ignore_errors=True)
        os.makedirs(self.run_dir, exist_ok=True)
        config = json.load(open(os.path.join(self.root, "cluster.json")))
        for i, process in enumerate(config["nodes"] + config["rms"]):
            process["port"] = self.args.port_base + i
            process["dataDir"] = "run/data/" + process["name"]
        json.dump(config, open(self.config, "w"), indent=2)
        self.partitions = config["partitions"]
        self.nodes = [n["name"] for n in config["nodes"]]
        self.rms = [r["name"] for r in config["rms"]]

    def cluster(self, *args):
        subprocess.run([os.path.join(self.root, "scripts", "cluster.sh"), "--config", self.config, *args],
                       check=True, stdout=subprocess.DEVNULL, env=dict(os.environ, DTC_BUILD="release"))

    def dtc(self, *args, timeout=300):
        return subprocess.run([os.path.join(self.bin, "dtc"), args[0], "--config", self.config, *args[1:]],
                              capture_output=True, text=True, timeout=timeout)

    def status(self):
        """Per process: (state, led, in flight, syncs) from `dtc status`."""
        rows = {}
        for line in self.dtc("status", timeout=60).stdout.splitlines():
            fields = line.split()
            if len(fields) < 3 or fields[2] != "up":
                continue
            if fields[0] in self.nodes and len(fields) >= 13:
                rows[fields[0]] = {"led": int(fields[3]), "inFlight": int(fields[4]), "syncs": int(fields[11]), "messages": int(fields[12])}
            elif fields[0] in self.rms and len(fields) >= 11:
                rows[fields[0]] = {"syncs": int(fields[9]), "messages": int(fields[10])}
        return rows

    def wait_all_led(self, seconds=60):
        deadline = time.time() + seconds
        while time.time() < deadline:
            if sum(row.get("led", 0) for row in self.status().values()) == self.partitions:
                return
            time.sleep(0.2)
        raise SystemExit("bench: the cluster did not lead every partition within 60 s")

    def pids(self):
        pids = {}
        for name in self.nodes + self.rms:
            path = os.path.join(self.run_dir, "run", "pids", f"{name}.pid")
            if os.path.exists(path):
                pids[name] = int(open(path).read().strip())
        return pids

    @staticmethod
    def cpu_seconds(pid):
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
        except OSError:
            return None

    def cpu_snapshot(self):
        return {name: self.cpu_seconds(pid) for name, pid in self.pids().items()}

    # --- measurements ------------------------------------------------------------------

    def limits(self):
        say("machine limits (dtc limits)")
        result = subprocess.run([os.path.join(self.bin, "dtc"), "limits", "--json", "--seconds", "3"],
                                capture_output=True, text=True, timeout=120, check=True)
        return json.loads(result.stdout)

    def load(self, concurrency, seconds, on_progress=None):
        """Runs `dtc load`; returns its JSON summary, the client's CPU seconds and its progress lines."""
        command = [os.path.join(self.bin, "dtc"), "load", "--config", self.config, "--duration", str(seconds),
                   "--concurrency", str(concurrency), "--retry-for", "60", "--json"] + (["--unary"] if self.args.unary else [])
        started = time.monotonic()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        progress = []
        buffer = b""
        while True:
            chunk = os.read(process.stderr.fileno(), 4096)
            if not chunk:
                break
            buffer += chunk
            *lines, buffer = re.split(rb"[\r\n]", buffer)
            for line in lines:
                match = re.search(rb"(\d+) committed, (\d+) aborted", line)
                if match:
                    sample = (time.monotonic() - started, int(match.group(1)), int(match.group(2)))
                    progress.append(sample)
                    if on_progress:
                        on_progress(sample)
        stdout = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"bench: dtc load exited {os.waitstatus_to_exitcode(status)}")
        return json.loads(stdout), usage.ru_utime + usage.ru_stime, progress

    def check(self):
        result = self.dtc("check", "--wait-quiet", "60", timeout=300)
        return result.returncode == 0, (result.stdout + result.stderr).strip().splitlines()[-1:]

    def point(self, concurrency, seconds):
        say(f"concurrency {concurrency}, {seconds} s")
        cpu_before, status_before = self.cpu_snapshot(), self.status()
        summary, client_cpu, _ = self.load(concurrency, seconds)
        cpu_after, status_after = self.cpu_snapshot(), self.status()
        committed = max(summary["committed"], 1)
        cpu = {name: round((cpu_after[name] - cpu_before[name]) * 1e6 / committed, 1)
               for name in cpu_before if cpu_before[name] is not None and cpu_after.get(name) is not None}
        cpu["dtc (client)"] = round(client_cpu * 1e6 / committed, 1)
        syncs = {name: status_after[name]["syncs"] - status_before[name]["syncs"]
                 for name in status_before if name in status_after}
        messages = {name: status_after[name]["messages"] - status_before[name]["messages"]
                    for name in status_before if name in status_after}
        messages["dtc (client)"] = summary["messagesSent"]
        passed, last = self.check()
        point = {
            "concurrency": concurrency, "seconds": summary["durationS"], "committed": summary["committed"],
            "aborted": summary["aborted"], "unknown": summary["unknown"], "throughput": summary["throughput"],
            "p50Ms": summary["p50Ms"], "p90Ms": summary["p90Ms"], "p99Ms": summary["p99Ms"], "maxMs": summary["maxMs"],
            "cpuUsPerTxn": cpu, "cpuUsPerTxnTotal": round(sum(cpu.values()), 1),
            "fsyncsPerTxn": round(sum(syncs.values()) / committed, 2), "fsyncsPerTxnByProcess": {k: round(v / committed, 3) for k, v in syncs.items()},
            "messagesPerTxn": round(sum(messages.values()) / committed, 2),
            "messagesPerTxnByProcess": {k: round(v / committed, 3) for k, v in messages.items()},
            "abortedByReason": summary["abortedByReason"], "check": "pass" if passed else "FAIL: " + " ".join(last),
        }
        say(f"  {point['throughput']} committed/s, p99 {point['p99Ms']} ms, {point['cpuUsPerTxnTotal']} µs CPU/txn, "
            f"{point['fsyncsPerTxn']} fsyncs/txn, {point['messagesPerTxn']} messages/txn, check {point['check']}")
        return point

    def failover(self, seconds):
        """Load at concurrency 64; the node that leads most partitions is killed a third of the
        way in and restarted two thirds of the way in, under the same load."""
        leader = max(self.status().items(), key=lambda item: item[1].get("led", -1))[0]
        kill_at, restart_at = seconds / 3, 2 * seconds / 3
        say(f"failover: {seconds} s at concurrency 64, kill -9 {leader} at {kill_at:.0f} s, restart at {restart_at:.0f} s")
        events = {}

        def on_progress(sample):
            if "kill" not in events and sample[0] >= kill_at:
                self.cluster("kill", leader)
                events["kill"] = sample[0]
            elif "kill" in events and "restart" not in events and sample[0] >= restart_at:
                self.cluster("restart", leader)
                events["restart"] = sample[0]
        summary, _, progress = self.load(64, seconds, on_progress)
        if "restart" not in events:
            self.cluster("restart", leader)
        passed, last = self.check()
        timeline = []
        for (t0, c0, _), (t1, c1, _) in zip(progress, progress[1:]):
            timeline.append({"t": round(t1, 2), "committedPerS": round((c1 - c0) / max(t1 - t0, 1e-3), 1)})
        # The surviving leaders keep committing their own partitions through the kill, so the
        # first commit after it says nothing; what shows the takeover (and the restarted
        # node's catch-up) is when the whole cluster is back to most of its rate before.
        kill_at, restart_at = events.get("kill", 0), events.get("restart")
        before = [s["committedPerS"] for s in timeline if s["t"] <= kill_at]
        steady = sum(before) / len(before) if before else 0

        def recovery(start, end):
            after = [s for s in timeline if start < s["t"] <= end]
            trough = min(after, key=lambda s: s["committedPerS"], default=None)
            if trough and trough["committedPerS"] >= 0.8 * steady:
                return trough["committedPerS"], 0.0  # it never fell below 80 %
            back = next((s["t"] for s in after if trough and s["t"] > trough["t"] and s["committedPerS"] >= 0.8 * steady), None)
            return (trough["committedPerS"] if trough else None), (None if back is None else round(back - start, 2))
        lowest, back = recovery(kill_at, restart_at or float("inf"))
        result = {"killed": leader, "killedAtS": round(kill_at, 2), "timeline": timeline,
                  "committedPerSBeforeKill": round(steady, 1), "lowestCommittedPerSAfterKill": lowest,
                  "backTo80PercentAfterS": back,
                  "throughput": summary["throughput"], "p99Ms": summary["p99Ms"], "unknown": summary["unknown"],
                  "check": "pass" if passed else "FAIL: " + " ".join(last)}
        if restart_at is not None:
            lowest, back = recovery(restart_at, float("inf"))
            result.update({"restartedAtS": round(restart_at, 2), "lowestCommittedPerSAfterRestart": lowest,
                           "backTo80PercentAfterRestartS": back})
        return result

    def run(self):
        report = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(),
                  "commit": git_commit(self.root), "quick": self.args.quick, "submitStream": not self.args.unary}
        report["limits"] = self.limits()
        self.write_config()
        self.cluster("up")
        try:
            self.wait_all_led()
            concurrencies = [64] if self.args.quick else self.args.concurrency
            seconds = 10 if self.args.quick else self.args.seconds
            report["points"] = [self.point(c, seconds) for c in concurrencies]
            if not self.args.quick and self.args.failover_seconds > 0:
                report["failover"] = self.failover(self.args.failover_seconds)
        finally:
            self.cluster("down")
        os.makedirs(self.out, exist_ok=True)
        json.dump(report, open(os.path.join(self.out, "REPORT.json"), "w"), indent=2)
        open(os.path.join(self.out, "report.html"), "w").write(render(report))
        say(f"wrote {self.out}/REPORT.json and report.html")
        failed = [p for p in report["points"] if p["check"] != "pass"]
        if report.get("failover", {}).get("check", "pass") != "pass" or failed:
            raise SystemExit("bench: dtc check failed after a run")


def machine():
    cpus = os.cpu_count()
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    return {"cpus": cpus, "cpuModel": model, "kernel": platform.release()}


def git_commit(root):
    try:
        return subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"


# --- the HTML report -------------------------------------------------------------------

def line_chart(title, points, x_label, y_label, markers=(), log_x=False):
    """points: [(x, y)]; a marker is (x, label)."""
    width, height, left, bottom = 560, 260, 60, 40
    if not points:
        return f"<p>{html.escape(title)}: no data</p>"
    import math
    xs = [math.log(x) if log_x else x for x, _ in points]
    ys = [y for _, y in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y1 = max(ys) * 1.1 if max(ys) > 0 else 1
    px = lambda x: left + (x - x0) / (x1 - x0) * (width - left - 20)
    py = lambda y: height - bottom - y / y1 * (height - bottom - 20)
    path = " ".join(f"{'M' if i == 0 else 'L'}{px(x):.1f},{py(y):.1f}" for i, (x, y) in enumerate(zip(xs, ys)))
    dots = "".join(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3"/>' for x, y in zip(xs, ys)) if len(points) < 40 else ""
    labels = "".join(f'<text x="{px(math.log(x) if log_x else x):.1f}" y="{height - bottom + 16}" text-anchor="middle">{x:g}</text>'
                     for x, _ in (points if len(points) < 12 else points[::max(1, len(points) // 8)]))
    ticks = "".join(f'<text x="{left - 6}" y="{py(y1 * f / 1.1) + 4:.1f}" text-anchor="end">{y1 * f / 1.1:,.0f}</text>' for f in (0, 0.5, 1))
    mark = ""
    for x, label in markers:
        mx = px(math.log(x) if log_x else x)
        mark += f'<line x1="{mx:.1f}" y1="20" x2="{mx:.1f}" y2="{height - bottom}" stroke="#c00" stroke-dasharray="4"/><text x="{mx + 4:.1f}" y="32" fill="#c00">{html.escape(label)}</text>'
    return (f'<figure><figcaption>{html.escape(title)}</figcaption><svg width="{width}" height="{height}" font-size="11" font-family="sans-serif">'
            f'<line x1="{left}" y1="{height - bottom}" x2="{width - 20}" y2="{height - bottom}" stroke="#888"/>'
            f'<line x1="{left}" y1="20" x2="{left}" y2="{height - bottom}" stroke="#888"/>{ticks}{labels}'
            f'<path d="{path}" fill="none" stroke="#2463b5" stroke-width="2"/><g fill="#2463b5">{dots}</g>{mark}'
            f'<text x="{(width + left) / 2}" y="{height - 6}" text-anchor="middle">{html.escape(x_label)}</text>'
            f'<text x="14" y="{height / 2}" transform="rotate(-90 14 {height / 2})" text-anchor="middle">{html.escape(y_label)}</text></svg></figure>')


def bar_chart(title, groups):
    """groups: {group label: {bar label: value}}: bars per process, one group per concurrency."""
    width, row = 640, 16
    names = sorted({name for bars in groups.values() for name in bars})
    top = max((v for bars in groups.values() for v in bars.values()), default=1) or 1
    y, parts = 10, []
    for group, bars in groups.items():
        parts.append(f'<text x="0" y="{y + 11}" font-weight="bold">{html.escape(group)}</text>')
        y += row
        for name in names:
            value = bars.get(name, 0)
            w = value / top * (width - 260)
            parts.append(f'<text x="10" y="{y + 11}">{html.escape(name)}</text><rect x="130" y="{y + 2}" width="{w:.1f}" height="11" fill="#2463b5"/>'
                         f'<text x="{136 + w:.1f}" y="{y + 11}">{value:,.0f} µs</text>')
            y += row
        y += 6
    return (f'<figure><figcaption>{html.escape(title)}</figcaption><svg width="{width}" height="{y + 10}" font-size="11" '
            f'font-family="sans-serif">{"".join(parts)}</svg></figure>')


def restart_summary(failover):
    if "restartedAtS" not in failover:
        return ""
    return (f"; after the restart under load, {failover['lowestCommittedPerSAfterRestart']} at the lowest, "
            f"back to 80 % {failover['backTo80PercentAfterRestartS']} s after it")


def render(report):
    points = report.get("points", [])
    rows = "".join(
        f"<tr><td>{p['concurrency']}</td><td>{p['throughput']:,.1f}</td><td>{p['p50Ms']:.1f}</td><td>{p['p90Ms']:.1f}</td>"
        f"<td>{p['p99Ms']:.1f}</td><td>{p['cpuUsPerTxnTotal']:,.0f}</td><td>{p['fsyncsPerTxn']}</td><td>{p['messagesPerTxn']}</td><td>{p['aborted']}</td>"
        f"<td>{html.escape(p['check'])}</td></tr>" for p in points)
    charts = [
        line_chart("Committed txn/s against concurrency", [(p["concurrency"], p["throughput"]) for p in points], "concurrency", "txn/s", log_x=True),
        line_chart("p99 latency against concurrency", [(p["concurrency"], p["p99Ms"]) for p in points], "concurrency", "ms", log_x=True),
        bar_chart("CPU µs per committed txn, by process", {f"concurrency {p['concurrency']}": p["cpuUsPerTxn"] for p in points}),
    ]
    failover = report.get("failover")
    if failover:
        markers = [(failover["killedAtS"], f"kill -9 {failover['killed']}")]
        if "restartedAtS" in failover:
            markers.append((failover["restartedAtS"], "restart"))
        charts.append(line_chart(
            f"Committed txn/s over time; {failover['killed']} killed (kill -9) at {failover['killedAtS']} s"
            + (f", restarted at {failover['restartedAtS']} s" if "restartedAtS" in failover else ""),
            [(s["t"], s["committedPerS"]) for s in failover["timeline"]], "seconds", "txn/s", markers=markers))
    limits = report["limits"]
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>dtc benchmark {html.escape(report['date'])}</title>
<style>body{{font-family:sans-serif;max-width:760px;margin:2em auto}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}figure{{margin:1.5em 0}}figcaption{{font-weight:bold;margin-bottom:.4em}}</style></head><body>
<h1>dtc benchmark</h1>
<p>{html.escape(report['date'])}, commit {html.escape(report['commit'])}, {report['machine']['cpus']} CPUs ({html.escape(report['machine']['cpuModel'])}), kernel {html.escape(report['machine']['kernel'])}{' — quick run' if report['quick'] else ''}{'; submits on SubmitStream' if report.get('submitStream') else '; one unary Submit per txn'}.</p>
<p>Machine limits measured in the same run: {limits['lmdbDurableCommitsPerS']:,.0f} durable LMDB commits/s ({limits['lmdbCommitMeanUs']:.0f} µs each);
{limits['grpcStreamMessagesPerS']:,.0f} messages/s over one gRPC stream on loopback.</p>
<table><tr><th>concurrency</th><th>txn/s</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>CPU µs/txn</th><th>fsyncs/txn</th><th>messages/txn</th><th>aborted</th><th>dtc check</th></tr>{rows}</table>
{''.join(charts)}
{f"<p>Failover: {failover['committedPerSBeforeKill']} committed txn/s before the kill, {failover['lowestCommittedPerSAfterKill']} at the lowest after it, back to 80 % of the rate before {failover['backTo80PercentAfterS']} s after the kill (0.5 s resolution){restart_summary(failover)}; {failover['unknown']} txns left unknown; dtc check {html.escape(failover['check'])}.</p>" if failover else ''}
</body></html>"""


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--bin", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--concurrency", type=lambda s: [int(c) for c in s.split(",")], default=[1, 16, 64, 256])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--failover-seconds", type=int, default=45, help="0: no failover run")
    parser.add_argument("--port-base", type=int, default=33100)
    parser.add_argument("--unary", action="store_true", help="dtc load sends a unary Submit per txn instead of using SubmitStream")
    Bench(parser.parse_args()).run()


if __name__ == "__main__":
    main()
