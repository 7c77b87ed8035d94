"""Which of kernels-s12's Gated DeltaNet kernels and configs fault on this GPU (temporary probe)."""
import itertools, math, subprocess, sys, concurrent.futures as cf
import torch

def inputs():
    torch.manual_seed(0)
    B, T, H, HV, K, V = 1, 16384, 16, 32, 128, 128
    dev, dt = "cuda", torch.bfloat16
    q = torch.randn(B, T, H, K, device=dev, dtype=dt) / K ** 0.5
    k = torch.nn.functional.normalize(torch.randn(B, T, H, K, device=dev), dim=-1).to(dt)
    v = torch.randn(B, T, HV, V, device=dev, dtype=dt)
    g = torch.nn.functional.logsigmoid(torch.randn(B, T, HV, device=dev)).to(dt) / 16
    beta = torch.sigmoid(torch.randn(B, T, HV, device=dev)).to(dt)
    return q, k, v, g, beta

def one(kernel, block, warps, stages):
    from kernels.linear import triton_gdn as m
    q, k, v, g, beta = inputs()
    B, T, H, KD = q.shape; HV, VD = v.shape[2], v.shape[3]
    if kernel == "untuned":
        out = m.gdn_launcher(q, k, v, g, beta, scale=KD ** -0.5, block_v=64)()
        torch.cuda.synchronize(); print("finite", bool(out.float().isfinite().all())); return
    C, S = m.CHUNK, m.SUB; n = math.ceil(T / C); rows = B * HV * n * C; ratio = HV // H
    gam = torch.empty(rows, device="cuda"); inv = torch.empty(rows, C, device="cuda", dtype=v.dtype)
    wk = torch.empty(rows, KD, device="cuda", dtype=v.dtype); wv = torch.empty(rows, VD, device="cuda", dtype=v.dtype)
    u = torch.empty_like(wv); st = torch.empty(B * HV * n, KD, VD, device="cuda", dtype=v.dtype)
    out = torch.empty_like(v); cfg = dict(num_warps=warps, num_stages=stages)
    dims = dict(KD=KD, VD=VD, C=C)
    def run(name, c):
        if name == "inverse":
            m._inverse_kernel[(n, B * HV)](k, g, beta, gam, inv, T, H, HV, ratio, KD=KD, C=C, S=S, **c)
        elif name == "w":
            m._w_kernel[(n, B * HV)](k, v, beta, gam, inv, wk, wv, T, H, HV, ratio, S=S, **dims, **c)
        elif name == "state":
            m._state_kernel[(VD // c["BV"], B * HV)](k, gam, wk, wv, u, st, T, H, HV, ratio, n, B, **dims, **c)
        else:
            m._output_kernel[(VD // c["BV"] * ratio, n, B * H)](q, k, gam, u, st, out, T, H, HV, ratio, n, KD ** -0.5, **dims, **c)
        torch.cuda.synchronize()
    safe = {"inverse": dict(BK=64, num_warps=4, num_stages=1), "w": dict(num_warps=4, num_stages=1),
            "state": dict(BV=32, num_warps=4, num_stages=2), "output": dict(BV=64, num_warps=4, num_stages=1)}
    for name in ("inverse", "w", "state", "output"):
        if name == kernel:
            c = dict(cfg, **({"BK": block} if name == "inverse" else {"BV": block} if block else {}))
            run(name, c); print("ok"); return
        run(name, safe[name])

if __name__ == "__main__":
    if len(sys.argv) > 1:
        one(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])); sys.exit()
    jobs = [("untuned", 0, 4, 1)]
    jobs += [("inverse", b, w, s) for b, w, s in itertools.product((32, 64), (1, 2, 4), (1, 2))]
    jobs += [("w", 0, w, s) for w, s in itertools.product((4, 8), (1, 2))]
    jobs += [("state", b, w, s) for b, w, s in itertools.product((16, 32, 64), (4, 8), (2, 3))]
    jobs += [("output", b, w, s) for b, w, s in itertools.product((32, 64, 128), (4, 8), (1, 2))]
    def go(j):
        r = subprocess.run([sys.executable, __file__, *map(str, j)], capture_output=True, text=True, timeout=240)
        last = (r.stdout + r.stderr).strip().splitlines()[-1:] or [""]
        return j, r.returncode, last[0][:160]
    with cf.ThreadPoolExecutor(12) as ex:
        for j, rc, last in ex.map(go, jobs):
            print(j, rc, last, flush=True)
