"""Run a command and report how much CPU other processes used meanwhile."""
import os, resource, subprocess, sys, time
def stat():
    with open('/proc/stat') as f:
        v = list(map(int, f.readline().split()[1:]))
    return sum(v), v[3] + v[4]
t0, i0 = stat(); w0 = time.time()
r = subprocess.run(sys.argv[1:])
t1, i1 = stat(); wall = time.time() - w0
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
hz = os.sysconf('SC_CLK_TCK')
other = ((t1 - t0) - (i1 - i0)) / hz - (ru.ru_utime + ru.ru_stime)
print(f'[measure] {" ".join(sys.argv[1:])}: wall {wall:.1f}s, other processes {other / wall:.2f} cores avg, loadavg {open("/proc/loadavg").read().split()[0]}', flush=True)
sys.exit(r.returncode)
