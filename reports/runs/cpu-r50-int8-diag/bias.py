"""systematic (mean) vs random part of the Q/DQ error on selected tensors, and logit margins"""
import sys, numpy as np, onnx, onnxruntime as ort, yaml
sys.path.insert(0, '/tmp/r50diag')
from stages.lib import data
f32, qdq = sys.argv[1], sys.argv[2]
p = yaml.safe_load(open('/tmp/r50diag/params.yaml'))
test = data.load_split('/tmp/r50diag/data/prepared/test.npz')
idx = np.random.default_rng(1).permutation(len(test))[:100]
x = data.preprocess(test.images[idx], p['data']['mean'], p['data']['std'], p['model']['image_size'])
names = ['/layer3/layer3.5/relu_2/Relu_output_0', '/layer4/layer4.1/relu_2/Relu_output_0', '/layer4/layer4.2/Add_output_0', '/Flatten_output_0', 'logits']
def run(path):
    m = onnx.load(path)
    for nm in names[:-1]: m.graph.output.append(onnx.ValueInfoProto(name=nm))
    s = ort.InferenceSession(m.SerializeToString(), providers=['CPUExecutionProvider'])
    return dict(zip(names, s.run(names, {'input': x})))
a, b = run(f32), run(qdq)
for nm in names:
    r, q = a[nm], b[nm]; e = q - r
    print(f"{nm[-38:]:38s} mean(fp32) {r.mean():8.4f} mean(q) {q.mean():8.4f} | err: mean {e.mean():8.4f} rms {np.sqrt((e**2).mean()):7.4f} | rms(fp32) {np.sqrt((r**2).mean()):7.4f}")
l = a['logits']; s = np.sort(l, 1); print('fp32 logit margin top1-top2: median', np.median(s[:, -1] - s[:, -2]).round(3), ' logit std across classes median', np.median(l.std(1)).round(3))
print('per-class mean logit shift (q - fp32):', (b['logits'] - l).mean(0).round(2))
