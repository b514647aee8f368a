"""Min over rounds of the per-round medians (quiet-machine estimate) and the
spread, for torch (oneDNN), the current ext breakdown and the prototype."""
import glob, re, collections
def rows(pat, key_cols, val_names, skip=0):
    out = collections.defaultdict(lambda: collections.defaultdict(list))
    for f in sorted(glob.glob(pat)):
        for line in open(f):
            m = re.match(r'^(T\d+ B\d+(?: I\d+)? H\d+(?: L2)?)\s+(.*)$', line.strip())
            if not m: continue
            parts = m.group(2).split()
            key = m.group(1) + ''.join(' ' + parts[i] + 't' for i in key_cols)
            vals = [float(x) for x in parts[skip:]]
            for n, v in zip(val_names, vals):
                out[key][n].append(v)
    return out
def show(title, d):
    print('\n## ' + title)
    for k, cols in d.items():
        print('%-28s ' % k + '  '.join('%s %s' % (n, ('%.2f' % min(v)) + ('..%.2f' % max(v) if len(v) > 1 else '')) for n, v in cols.items()))
show('torch (oneDNN): min..max over rounds of medians', rows('results/torch_r*.txt', [0], ['lstm_ms', 'proj_ms', 'rec_ms', 'rec_us', 'ext_ms', 'ext_rec_us'], skip=1))
show('current ext pieces (breakdown, production flags)', rows('results/breakdown_r*.txt', [0], ['sgemm', 'cell', 'step', 'sum', 'pfor'], skip=1))
show('breakdown with -fopenmp (parallel_for forks)', rows('results/breakdown_omp_r*.txt', [0], ['sgemm', 'cell', 'step', 'sum', 'pfor'], skip=1))
show('prototype (accurate tanh)', rows('results/proto_r*.txt', [], ['maxdiff', '1t', '1t_gemm', '1t_save', '2t_thr', '2t_pool', '2t_save', 'GF', 'atpf_once', 'atpf_step']))
show('prototype (fast rational tanh)', rows('results/proto_fasttanh_r*.txt', [], ['maxdiff', '1t', '1t_gemm', '1t_save', '2t_thr', '2t_pool', '2t_save', 'GF', 'atpf_once', 'atpf_step']))
