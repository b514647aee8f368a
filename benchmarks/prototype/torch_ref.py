"""GEMM ceiling + torch.nn.LSTM (oneDNN) inference timings and the input-projection
GEMM time, for the benchmark shapes. Medians over repeats; also reports other
processes' CPU load during the run (from /proc/stat vs our own rusage)."""
import sys, time, json, os, resource
import torch
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))
try:
    import lstm_ext
except Exception as e:  # the tree may be mid-rebuild
    print('lstm_ext not importable:', e); lstm_ext = None

def cpu_busy():
    with open('/proc/stat') as f:
        v = list(map(int, f.readline().split()[1:]))
    idle = v[3] + v[4]
    return sum(v), idle

def med(fn, reps, inner=1):
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter(); fn(); ts.append((time.perf_counter() - t0) / inner)
    ts.sort(); return ts[len(ts) // 2], ts[0]

def ceiling(th):
    torch.set_num_threads(th)
    a = torch.randn(2048, 2048); b = torch.randn(2048, 2048)
    m, best = med(lambda: torch.mm(a, b), 9)
    return 2 * 2048**3 / m / 1e9, 2 * 2048**3 / best / 1e9

shapes = [(200, 1, 64, 64, 1), (200, 8, 64, 64, 1), (100, 4, 128, 128, 2), (50, 1, 256, 256, 1),
          (100, 32, 256, 256, 1), (100, 64, 512, 512, 1)]
out = {}
tot0, idle0 = cpu_busy(); r0 = resource.getrusage(resource.RUSAGE_SELF)
w0 = time.time()
for th in (2, 1):
    out[f'gemm_gflops_{th}t'] = ceiling(th)
torch.set_num_threads(2)
print('GEMM 2048^2 GFLOP/s (median, best): 2t %.1f %.1f | 1t %.1f %.1f' % (*out['gemm_gflops_2t'], *out['gemm_gflops_1t']))
print('%-22s %3s %10s %10s %10s %12s %10s %12s' % ('shape', 'thr', 'lstm_ms', 'proj_ms', 'rec_ms', 'rec_us/step', 'ext_ms', 'ext_rec_us/st'))
for th in (2, 1):
    torch.set_num_threads(th)
    for T, B, I, H, L in shapes:
        lstm = torch.nn.LSTM(I, H, num_layers=L).eval()
        x = torch.randn(T, B, I)
        reps = 31 if T * B * H < 300000 else 11
        with torch.no_grad():
            lm, _ = med(lambda: lstm(x), reps)
            # input projection GEMMs (one per layer), as the fused kernel would do them
            W = torch.randn(4 * H, I); bias = torch.randn(4 * H); X = x.reshape(T * B, I)
            W2 = torch.randn(4 * H, H); X2 = torch.randn(T * B, H)
            def proj():
                torch.addmm(bias, X, W.t())
                for _ in range(L - 1):
                    torch.addmm(bias, X2, W2.t())
            pm, _ = med(proj, reps)
        rec = lm - pm
        em = float('nan')
        if lstm_ext is not None:
            ext = lstm_ext.LSTM(I, H, num_layers=L).eval(); ext.load_state_dict(lstm.state_dict())
            with torch.no_grad():
                d = (ext(x)[0] - lstm(x)[0]).abs().max().item()
                assert d < 1e-4, d
                em, _ = med(lambda: ext(x), reps)
        name = f'T{T} B{B} I{I} H{H}' + (f' L{L}' if L > 1 else '')
        print('%-22s %3d %10.3f %10.3f %10.3f %12.2f %10.3f %12.2f' % (name, th, lm * 1e3, pm * 1e3, rec * 1e3, rec / (T * L) * 1e6, em * 1e3, (em - pm) / (T * L) * 1e6))
        out[f'{name} {th}t'] = dict(lstm_ms=lm * 1e3, proj_ms=pm * 1e3, rec_us_step=rec / (T * L) * 1e6, ext_ms=em * 1e3)
        sys.stdout.flush()
tot1, idle1 = cpu_busy(); r1 = resource.getrusage(resource.RUSAGE_SELF)
wall = time.time() - w0
hz = os.sysconf('SC_CLK_TCK')
busy = ((tot1 - tot0) - (idle1 - idle0)) / hz
ours = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
print('other processes CPU: %.2f cores avg over %.0fs' % ((busy - ours) / wall, wall))
json.dump(out, open(sys.argv[1] if len(sys.argv) > 1 else 'torch_ref.json', 'w'), indent=1)
