"""top-1 of fp32 vs Q/DQ ONNX on ORT CPU, and agreement. usage: evalq.py fp32.onnx q1.onnx [q2.onnx ...] [--n N]"""
import sys, numpy as np, onnxruntime as ort, yaml
sys.path.insert(0, '/tmp/r50diag')
from stages.lib import data
args = [a for a in sys.argv[1:] if not a.startswith('--n')]
n = int(next((a.split('=')[1] for a in sys.argv[1:] if a.startswith('--n=')), 2000))
p = yaml.safe_load(open('/tmp/r50diag/params.yaml'))
test = data.load_split('/tmp/r50diag/data/prepared/test.npz')
idx = np.random.default_rng(0).permutation(len(test))[:n]; X = test.images[idx]; y = test.labels[idx]
def logits(path):
    o = ort.SessionOptions(); o.log_severity_level = 3
    s = ort.InferenceSession(path, o, providers=['CPUExecutionProvider'])
    out = []
    for i in range(0, n, 100):
        x = data.preprocess(X[i:i+100], p['data']['mean'], p['data']['std'], p['model']['image_size'])
        out.append(s.run(None, {s.get_inputs()[0].name: x})[0])
    return np.concatenate(out)
ref = logits(args[0]); rp = ref.argmax(1)
print(f"{args[0]}: top1 {100*(rp==y).mean():.2f}%  pred hist {np.bincount(rp, minlength=10)}")
for q in args[1:]:
    l = logits(q); qp = l.argmax(1)
    print(f"{q}: top1 {100*(qp==y).mean():.2f}%  agree {(qp==rp).mean():.3f}  pred hist {np.bincount(qp, minlength=10)}")
