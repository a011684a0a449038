#!/usr/bin/env python3
"""The nemesis of scripts/chaos.sh: faults on a seeded schedule, then a heal.

Two lanes run side by side, each one fault at a time: the node lane faults one coordinator
node (never two: at most a minority of three), the RM lane one resource manager. Each fault
lasts a few seconds and is undone before the lane's next one. Kinds: kill -9 then restart,
SIGSTOP then SIGCONT (longer than the suspicion timeout), and, when the `dtc fault` command
exists and the processes allow fault injection, a partition from the other nodes, message
drops, delays and duplicates. The schedule (kinds, targets, lengths, gaps) comes from --seed;
when each fault starts depends on how long the previous one took to undo.

At the end it heals everything (resume, restart what is down, clear network faults) and
writes the counts by kind as JSON. Every event is logged with its time.
"""
import argparse
import json
import random
import subprocess
import sys
import threading
import time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    p.add_argument("--cluster-sh", required=True)
    p.add_argument("--dtc", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--network", action="store_true", help="also partitions, drops, delays and duplicates")
    p.add_argument("--counts", required=True, help="write the fault counts as JSON here")
    a = p.parse_args()

    config = json.load(open(a.config))
    nodes = [n["name"] for n in config["nodes"]]
    rms = [r["name"] for r in config["rms"]]
    suspicion = config["timing"]["suspicionTimeoutMs"] / 1000.0
    nemesis = Nemesis(a, nodes, rms, suspicion)
    deadline = time.monotonic() + a.duration
    lanes = [
        threading.Thread(target=nemesis.lane, args=("node", nodes, random.Random(a.seed * 2 + 1), deadline)),
        threading.Thread(target=nemesis.lane, args=("rm", rms, random.Random(a.seed * 2 + 2), deadline)),
    ]
    for lane in lanes:
        lane.start()
    for lane in lanes:
        lane.join()
    nemesis.heal()
    json.dump({"faults": nemesis.counts, "failures": nemesis.failures}, open(a.counts, "w"), indent=1, sort_keys=True)
    return 0


class Nemesis:
    def __init__(self, args, nodes, rms, suspicion):
        self.args = args
        self.nodes = nodes
        self.rms = rms
        self.suspicion = suspicion
        self.counts = {}
        self.failures = []
        self.lock = threading.Lock()
        self.started = time.monotonic()

    def log(self, text):
        with self.lock:
            print(f"[nemesis {time.monotonic() - self.started:7.2f}s] {text}", flush=True)

    def run(self, *cmd):
        """Runs one command (bounded); a failure is logged and counted, not fatal."""
        try:
            r = subprocess.run(list(cmd), capture_output=True, text=True, timeout=60)
            if r.returncode != 0:
                self.fail(f"{' '.join(cmd[-3:])}: exit {r.returncode}: {(r.stderr or r.stdout).strip()[-300:]}")
                return False
            return True
        except subprocess.TimeoutExpired:
            self.fail(f"{' '.join(cmd[-3:])}: timed out")
            return False

    def fail(self, text):
        self.log("command failed: " + text)
        with self.lock:
            self.failures.append(text)

    def cluster(self, *args):
        return self.run(self.args.cluster_sh, "--config", self.args.config, *args)

    def fault(self, *args):
        return self.run(self.args.dtc, "fault", *args, "--config", self.args.config)

    def fault_set(self, target, rng, *settings):
        """Sets `target`'s drop/delay/duplicate, its random draws seeded from the schedule."""
        return self.fault("set", target, *settings, "--seed", str(rng.randrange(1, 2**31)))

    def kinds(self):
        kinds = ["kill", "pause"]
        if self.args.network:
            kinds += ["partition", "drop", "delay", "duplicate"]
        return kinds

    def lane(self, lane, targets, rng, deadline):
        # A few quiet seconds first, so the run starts from a working cluster.
        time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
        while time.monotonic() < deadline:
            kind = rng.choice(self.kinds())
            target = rng.choice(targets)
            length = rng.uniform(2.0, 6.0)
            if kind == "pause":
                length = rng.uniform(1.5 * self.suspicion, 6.0 * self.suspicion)
            gap = rng.uniform(0.5, 3.0)
            if time.monotonic() + length > deadline:
                break
            self.inject(lane, kind, target, length, rng)
            time.sleep(max(0.0, min(gap, deadline - time.monotonic())))

    def inject(self, lane, kind, target, length, rng):
        if kind == "kill":
            self.log(f"kill -9 {target} for {length:.1f}s")
            injected = self.cluster("kill", target)
            time.sleep(length)
            self.cluster("restart", target)
            self.log(f"restarted {target}")
        elif kind == "pause":
            self.log(f"SIGSTOP {target} for {length:.1f}s (suspicion timeout {self.suspicion:.1f}s)")
            injected = self.cluster("pause", target)
            time.sleep(length)
            self.cluster("resume", target)
            self.log(f"SIGCONT {target}")
        else:
            injected = self.inject_network(kind, target, length, rng)
        # Only faults that took effect are counted.
        if injected:
            with self.lock:
                label = f"{kind} {lane}"
                self.counts[label] = self.counts.get(label, 0) + 1

    def inject_network(self, kind, target, length, rng):
        if kind == "partition":
            # A node is cut off from its peers; an RM from every node.
            others = [n for n in self.nodes if n != target]
            direction = rng.choice(["both", "both", "in", "out"])
            self.log(f"partition {target} from {','.join(others)} ({direction}) for {length:.1f}s")
            injected = self.fault("partition", target, "--from", ",".join(others), "--direction", direction)
        elif kind == "drop":
            rate = rng.choice([0.05, 0.1, 0.3])
            self.log(f"drop {rate:.0%} of {target}'s messages for {length:.1f}s")
            injected = self.fault_set(target, rng, "--drop", str(rate))
        elif kind == "delay":
            delay, jitter = rng.choice([(20, 10), (50, 30), (200, 100)])
            self.log(f"delay {target}'s messages {delay}±{jitter} ms for {length:.1f}s")
            injected = self.fault_set(target, rng, "--delay", f"{delay}ms", "--jitter", f"{jitter}ms")
        else:
            rate = rng.choice([0.05, 0.2, 0.5])
            self.log(f"duplicate {rate:.0%} of {target}'s messages for {length:.1f}s")
            injected = self.fault_set(target, rng, "--duplicate", str(rate))
        time.sleep(length)
        self.fault("clear", target)
        self.log(f"cleared {target}")
        return injected

    def heal(self):
        """Every process running and resumed, no network fault left."""
        self.log("heal: resume, restart what is down, clear network faults")
        for name in self.nodes + self.rms:
            status = subprocess.run([self.args.cluster_sh, "--config", self.args.config, "status"],
                                    capture_output=True, text=True, timeout=60).stdout
            line = next((l for l in status.splitlines() if l.split()[:1] == [name]), "")
            if line.endswith("paused"):
                self.cluster("resume", name)
            elif line.endswith("down"):
                self.cluster("restart", name)
        if self.args.network:
            self.fault("clear")


if __name__ == "__main__":
    sys.exit(main())
