#!/usr/bin/env python3
"""PyTorch eager reference for the influence benchmarks (benches/influence.rs does the same math).

NB201 search supernet (C=16, N=5, 10 classes, bias-free convs: 1,686,106 weights), batch 64,
32x32, float32, the mixing weights w = softmax(alpha) as the leaf:
  1. gradient vs HVP (double backward) per batch;
  2. DARTS-IM with Woodbury over N batches: u = B.1 (with the per-batch gradients from the same
     create_graph pass), z = F^-1 u (Woodbury, Gram and solve in float64), I = -B^T z;
  3. sequential Sherman-Morrison vs batched Woodbury on random G at P = 1,686,106;
  4. K-FAC and EK-FAC (factors from forward hooks and gradients at the layer outputs, batch
     sums in float32 accumulated in float64, eigh in float64, EK-FAC's per-sample eigenvalue correction, closed-form IHVP; BatchNorm
     diagonal) against Woodbury on the same N = 10 batches: build time and one IHVP.
With `forward-ad`, parts 1 and 2 take second derivatives by reverse over forward as dartsif-dist
does by default: PyTorch's forward-mode AD (torch.autograd.forward_ad dual tensors, the weights
made dual through torch.func.functional_call) gives the logits' tangent, L' = <grad_z L, z'>, and
one backward of L' gives grad(grad L . d); the Fisher samples then need their own backward.
BatchNorm then uses running statistics (compare with `cargo bench --bench influence -- micro=0`):
in torch 2.11 a backward through batch_norm's forward-AD formula in training mode is not the
second derivative (6.8e-2 relative error in float64 against double backward on a small NB201
supernet; with running statistics they agree to 1e-16).
  6. `step [space=darts] [bf16]` alone: first-order DARTS search steps (theta and alpha), images/s,
     on the NB201 supernet or the DARTS CIFAR supernet (1,930,618 weights).
`device=cuda` runs on GPU 0 (launch/gpu-check), with cudnn.benchmark on.
Run: python3 benches/pytorch_eager.py [quick] [no-sm] [no-kfac] [im=N] [if=N] [sm-max=64] [forward-ad] [device=cuda]   (torch 2.11.0; default threads)
no-sm skips part 3, no-kfac part 4, kfac-only runs part 4 alone; im=N runs part 2 for that N only; if=N runs DARTS-IF per candidate alone; part 1 reports medians of interleaved repetitions.
sm-max skips the Python-loop Sherman-Morrison above that N (at N=256 it takes about ten minutes).
"""
import math
import statistics
import sys
import time

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

OPS = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]


class ReLUConvBN(nn.Module):
    def __init__(self, cin, cout, k, stride, pad, affine):
        super().__init__()
        self.op = nn.Sequential(nn.ReLU(), nn.Conv2d(cin, cout, k, stride, pad, bias=False), nn.BatchNorm2d(cout, affine=affine))

    def forward(self, x):
        return self.op(x)


class Cell(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.edges = nn.ModuleDict()
        for i in range(1, 4):
            for j in range(i):
                self.edges[f"{i}<-{j}"] = nn.ModuleList(
                    [nn.Identity(), nn.Identity(), ReLUConvBN(c, c, 1, 1, 0, False), ReLUConvBN(c, c, 3, 1, 1, False),
                     nn.AvgPool2d(3, 1, 1, count_include_pad=False)])

    def forward(self, x, w):
        nodes = [x]
        for i in range(1, 4):
            acc = 0
            for j in range(i):
                e = i * (i - 1) // 2 + j
                for o, op in enumerate(self.edges[f"{i}<-{j}"]):
                    if o == 0:
                        continue  # none: exactly zero
                    acc = acc + w[e, o] * op(nodes[j])
            nodes.append(acc)
        return nodes[-1]


class ResBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv_a = ReLUConvBN(cin, cout, 3, 2, 1, True)
        self.conv_b = ReLUConvBN(cout, cout, 3, 1, 1, True)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(cin, cout, 1, bias=False))

    def forward(self, x):
        return self.conv_b(self.conv_a(x)) + self.downsample(x)


class Supernet(nn.Module):
    def __init__(self, c=16, n=5, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        cells = []
        for s, ch in enumerate([c, 2 * c, 4 * c]):
            if s > 0:
                cells.append(ResBlock(ch // 2, ch))
            cells += [Cell(ch) for _ in range(n)]
        self.cells = nn.ModuleList(cells)
        self.lastact = nn.Sequential(nn.BatchNorm2d(4 * c), nn.ReLU())
        self.classifier = nn.Linear(4 * c, classes)

    def forward(self, x, w):
        h = self.stem(x)
        for cell in self.cells:
            h = cell(h, w) if isinstance(cell, Cell) else cell(h)
        h = self.lastact(h).mean((2, 3))
        return self.classifier(h)


# DARTS search space (quark0/darts model_search.py, operations.py), affine-free BatchNorm in the
# cells as in the search: the CIFAR supernet C=16, 8 cells, 14 edges of 8 ops (1,930,618 weights).
DARTS_OPS = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
             "dil_conv_3x3", "dil_conv_5x5"]


def relu_conv_bn(cin, cout, k, stride, pad):
    return nn.Sequential(nn.ReLU(), nn.Conv2d(cin, cout, k, stride, pad, bias=False), nn.BatchNorm2d(cout, affine=False))


def dil_conv(cin, cout, k, stride, pad, dil):
    return nn.Sequential(nn.ReLU(), nn.Conv2d(cin, cin, k, stride, pad, dilation=dil, groups=cin, bias=False),
                         nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout, affine=False))


def sep_conv(cin, cout, k, stride, pad):
    return nn.Sequential(dil_conv(cin, cin, k, stride, pad, 1), dil_conv(cin, cout, k, 1, pad, 1))


class FactorizedReduce(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.relu = nn.ReLU()
        self.c1 = nn.Conv2d(cin, cout // 2, 1, 2, bias=False)
        self.c2 = nn.Conv2d(cin, cout // 2, 1, 2, bias=False)
        self.bn = nn.BatchNorm2d(cout, affine=False)

    def forward(self, x):
        x = self.relu(x)
        return self.bn(torch.cat([self.c1(x), self.c2(x[:, :, 1:, 1:])], 1))


def darts_op(name, c, stride):
    if name == "max_pool_3x3":
        return nn.Sequential(nn.MaxPool2d(3, stride, 1), nn.BatchNorm2d(c, affine=False))
    if name == "avg_pool_3x3":
        return nn.Sequential(nn.AvgPool2d(3, stride, 1, count_include_pad=False), nn.BatchNorm2d(c, affine=False))
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(c, c)
    if name.startswith("sep_conv"):
        k = int(name[-1])
        return sep_conv(c, c, k, stride, k // 2)
    k = int(name[-1])
    return dil_conv(c, c, k, stride, k - 1, 2)


class DartsCell(nn.Module):
    def __init__(self, cpp, cp, c, reduction, reduction_prev):
        super().__init__()
        self.reduction = reduction
        self.pre0 = FactorizedReduce(cpp, c) if reduction_prev else relu_conv_bn(cpp, c, 1, 1, 0)
        self.pre1 = relu_conv_bn(cp, c, 1, 1, 0)
        self.edges = nn.ModuleList()
        for i in range(4):
            for j in range(2 + i):
                stride = 2 if reduction and j < 2 else 1
                # `none` (index 0) contributes exactly zero and has no module.
                self.edges.append(nn.ModuleList([darts_op(o, c, stride) for o in DARTS_OPS[1:]]))

    def forward(self, s0, s1, w):
        states = [self.pre0(s0), self.pre1(s1)]
        e = 0
        for i in range(4):
            acc = 0
            for h in states:
                acc = acc + sum(w[e, o + 1] * op(h) for o, op in enumerate(self.edges[e]))
                e += 1
            states.append(acc)
        return torch.cat(states[-4:], 1)


class DartsSupernet(nn.Module):
    def __init__(self, c=16, layers=8, classes=10):
        super().__init__()
        cc = 3 * c
        self.stem = nn.Sequential(nn.Conv2d(3, cc, 3, padding=1, bias=False), nn.BatchNorm2d(cc))
        cpp, cp, cc = cc, cc, c
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                cc *= 2
            self.cells.append(DartsCell(cpp, cp, cc, reduction, reduction_prev))
            reduction_prev = reduction
            cpp, cp = cp, 4 * cc
        self.classifier = nn.Linear(cp, classes)

    def forward(self, x, w):
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, w[1] if cell.reduction else w[0])
        return self.classifier(s1.mean((2, 3)))


DEVICE = torch.device("cuda" if "device=cuda" in sys.argv else "cpu")


def sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def timed(f):
    sync()
    t = time.perf_counter()
    out = f()
    sync()
    return out, time.perf_counter() - t


def step_part(space, bf16, steps):
    """Part 6: first-order DARTS search steps as benches/influence.rs `step` runs them: alpha's
    gradient through softmax(alpha) on one batch and Adam (3e-4, (0.5, 0.999), wd 1e-3); theta's
    on another, clipped to norm 5, SGD (0.025, momentum 0.9, wd 3e-4); batch 64 each, BatchNorm
    with batch statistics. bf16: torch.autocast(bfloat16) around the forward passes."""
    torch.manual_seed(0)
    if space == "darts":
        net = DartsSupernet().to(DEVICE)
        alphas = [(1e-3 * torch.randn(14, 8, device=DEVICE)).requires_grad_() for _ in range(2)]
    else:
        net = Supernet().to(DEVICE)
        alphas = [(1e-3 * torch.randn(6, 5, device=DEVICE)).requires_grad_()]
    params = list(net.parameters())
    print(f"{space} supernet: {sum(p.numel() for p in params)} weights, batch 64, {'bf16' if bf16 else 'f32'}, "
          f"device {DEVICE}")
    if DEVICE.type == "cuda":
        torch.backends.cudnn.benchmark = True
    sgd = torch.optim.SGD(params, lr=0.025, momentum=0.9, weight_decay=3e-4)
    adam = torch.optim.Adam(alphas, lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    xa, ya = torch.randn(64, 3, 32, 32, device=DEVICE), torch.randint(0, 10, (64,), device=DEVICE)
    xw, yw = torch.randn(64, 3, 32, 32, device=DEVICE), torch.randint(0, 10, (64,), device=DEVICE)

    def mixed(x, w):
        if bf16:
            with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
                return net(x, w).float()
        return net(x, w)

    def one():
        w = [a.softmax(-1) for a in alphas]
        adam.zero_grad(set_to_none=True)
        alphas_grad = torch.autograd.grad(F.cross_entropy(mixed(xa, w if len(w) > 1 else w[0]), ya), alphas)
        for a, g in zip(alphas, alphas_grad):
            a.grad = g
        adam.step()
        w = [a.softmax(-1).detach() for a in alphas]
        sgd.zero_grad(set_to_none=True)
        F.cross_entropy(mixed(xw, w if len(w) > 1 else w[0]), yw).backward()
        nn.utils.clip_grad_norm_(params, 5.0)
        sgd.step()

    for _ in range(3):
        one()
    if DEVICE.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    _, t = timed(lambda: [one() for _ in range(steps)])
    s = t / steps
    print(f"search step ({steps} steps)  {s:8.4f} s   {128 / s:.0f} images/s")
    if DEVICE.type == "cuda":
        print(f"device memory peak        {torch.cuda.max_memory_reserved() / 2**20:8.0f} MB reserved, "
              f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MB allocated")


def main():
    quick = "quick" in sys.argv
    if "step" in sys.argv:
        space = next((a.split("=")[1] for a in sys.argv if a.startswith("space=")), "nb201")
        return step_part(space, "bf16" in sys.argv, 5 if quick else 20)
    sm_max = next((int(a.split("=")[1]) for a in sys.argv if a.startswith("sm-max=")), 1 << 30)
    reps = 1 if quick else 5
    no_sm = "no-sm" in sys.argv
    im_n = next((int(a.split("=")[1]) for a in sys.argv if a.startswith("im=")), None)
    torch.manual_seed(0)
    net = Supernet().to(DEVICE)
    params = [p for p in net.parameters()]
    P = sum(p.numel() for p in params)
    print(f"threads: {torch.get_num_threads()}  NB201 supernet: {P} weights  second derivatives: "
          + ("reverse over forward (forward AD)" if "forward-ad" in sys.argv else "double backward"))
    w = torch.softmax(1e-3 * torch.randn(6, 5), -1).to(DEVICE).detach().requires_grad_()
    batches = [(torch.randn(64, 3, 32, 32).to(DEVICE), torch.randint(0, 10, (64,)).to(DEVICE))
               for _ in range(max(10, im_n or 0))]

    if "kfac-only" in sys.argv:
        return kfac_part(net, params, w, batches, 2 if quick else 10, reps)

    def loss(b):
        x, y = batches[b]
        return F.cross_entropy(net(x, w), y)

    def grad(b):
        return torch.autograd.grad(loss(b), params)

    if_n = next((int(a.split("=")[1]) for a in sys.argv if a.startswith("if=")), None)
    if if_n:
        return darts_if_part(net, params, w, batches, if_n, loss)

    forward_ad = "forward-ad" in sys.argv
    if forward_ad:
        net.eval()  # running BatchNorm statistics: see the docstring
    names = [n for n, _ in net.named_parameters()]

    def tangent_loss(b, w_dir=None, p_dir=None):
        # (L, L') with L' = grad L . (w_dir, p_dir), by one forward carrying tangents.
        x, y = batches[b]
        with fwAD.dual_level():
            ps = {n: (fwAD.make_dual(p, d) if p_dir is not None else p) for n, p, d in
                  zip(names, params, p_dir if p_dir is not None else params)}
            wd = fwAD.make_dual(w, w_dir) if w_dir is not None else w
            z, zd = fwAD.unpack_dual(functional_call(net, ps, (x, wd)))
        # The loss's own tangent <grad_z L, z'> by reverse mode (cross_entropy's forward-AD formula
        # writes in place, which a backward through it refuses).
        l = F.cross_entropy(z, y)
        gz = torch.autograd.grad(l, z, create_graph=True)[0]
        return l, (gz * zd).sum()

    def hvp(b, u):
        if forward_ad:
            return torch.autograd.grad(tangent_loss(b, p_dir=u)[1], params)
        g = torch.autograd.grad(loss(b), params, create_graph=True)
        return torch.autograd.grad(sum((gi * ui).sum() for gi, ui in zip(g, u)), params)

    grad(0)
    u = [torch.randn_like(p) for p in params]
    tgs, ths = [], []
    for _ in range(reps):  # interleaved, medians: both see the same machine noise
        tgs.append(timed(lambda: grad(0))[1])
        ths.append(timed(lambda: hvp(0, u))[1])
    tg, th = statistics.median(tgs), statistics.median(ths)
    print(f"gradient per batch        {tg:8.3f} s")
    print(f"HVP per batch             {th:8.3f} s   HVP/gradient {th / tg:.2f}")

    eta = 5e-4
    for n in ([im_n] if im_n else [2] if quick else [3, 10]):
        def darts_im():
            gs, us = [], 0
            for b in range(n):
                if forward_ad:
                    l, ld = tangent_loss(b, w_dir=torch.ones_like(w))
                    gt = torch.autograd.grad(l, params, retain_graph=True)
                    gs.append(torch.cat([g.reshape(-1) for g in gt]))
                    b1 = torch.autograd.grad(ld, params)
                else:
                    gt_gw = torch.autograd.grad(loss(b), params + [w], create_graph=True)
                    gt, gw = gt_gw[:-1], gt_gw[-1]
                    gs.append(torch.cat([g.detach().reshape(-1) for g in gt]))
                    b1 = torch.autograd.grad(gw.sum(), params)
                us = us + torch.cat([x.reshape(-1) for x in b1])
            u = us / n
            G = torch.stack(gs).double()
            K = G @ G.T + n * eta * torch.eye(n, dtype=torch.float64)
            y = torch.linalg.solve(K, G @ u.double())
            z = ((u.double() - G.T @ y) / eta).float()
            zs = list(torch.split(z, [p.numel() for p in params]))
            zs = [zz.view_as(p) for zz, p in zip(zs, params)]
            s = 0
            for b in range(n):
                if forward_ad:
                    s = s + torch.autograd.grad(tangent_loss(b, p_dir=zs)[1], w)[0]
                    continue
                gt = torch.autograd.grad(loss(b), params, create_graph=True)
                s = s + torch.autograd.grad(sum((g * zz).sum() for g, zz in zip(gt, zs)), w)[0]
            return -s / n
        _, t = timed(darts_im)
        print(f"DARTS-IM woodbury N={n:<3}   {t:8.3f} s   = {t / (n * tg):.2f} gradients of N batches")

    for n in ([] if no_sm else [16] if quick else [16, 64, 256]):
        torch.manual_seed(n)
        G = torch.randn(n, P) * 1e-3
        v = torch.randn(P)
        _, t_gram = timed(lambda: G.double() @ G.double().T)

        def woodbury():
            Gd = G.double()
            K = Gd @ Gd.T + n * eta * torch.eye(n, dtype=torch.float64)
            y = torch.linalg.solve(K, Gd @ v.double())
            return (v.double() - Gd.T @ y) / eta

        def sherman():
            Gd = G.double()
            r = torch.zeros_like(Gd)
            d = []
            for j in range(n):
                rj = Gd[j] / eta
                for i in range(j):
                    rj = rj - r[i] * (r[i] @ Gd[j]) / d[i]
                r[j] = rj
                d.append(n + Gd[j] @ rj)
            out = v.double() / eta
            for j in range(n):
                out = out - r[j] * (r[j] @ v.double()) / d[j]
            return out
        xw, t_w = timed(woodbury)
        if n > sm_max:
            print(f"N={n:<4} Gram GEMM {t_gram:7.3f} s   Woodbury {t_w:7.3f} s ({t_w / t_gram:.2f}x Gram)   Sherman-Morrison skipped (sm-max={sm_max})")
            continue
        xs, t_s = timed(sherman)
        diff = ((xw - xs).norm() / xs.norm()).item()
        print(f"N={n:<4} Gram GEMM {t_gram:7.3f} s   Woodbury {t_w:7.3f} s ({t_w / t_gram:.2f}x Gram)   Sherman-Morrison {t_s:8.3f} s   rel. diff {diff:.1e}")


    if "no-kfac" not in sys.argv:
        kfac_part(net, params, w, batches, 2 if quick else 10, reps)


def darts_if_part(net, params, w, batches, n, loss):
    """DARTS-IF per candidate, as `cargo bench --bench influence -- if=N` times it: the Woodbury
    operator over N batches (per-batch gradients, Gram), then per candidate the loss and the
    theta-gradient g over the N batches at the mixing weights with the candidate's weight set to
    zero, and g^T F^-1 g; the first three candidates (edge 0, ops 1-3: op 0 is `none`), median."""
    eta = 5e-4

    def build():
        gs = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss(b), params)]) for b in range(n)]
        G = torch.stack(gs).double()
        return G, G @ G.T + n * eta * torch.eye(n, dtype=torch.float64, device=G.device)
    (G, K), t_build = timed(build)
    with torch.no_grad():
        (l0, t_l0) = timed(lambda: sum(loss(b).item() for b in range(n)) / n)

    def candidate(op):
        wc = w.detach().clone()
        wc[0, op] = 0.0
        ls, gsum = 0.0, None
        for b in range(n):
            x, y = batches[b]
            l = F.cross_entropy(net(x, wc), y)
            g = torch.autograd.grad(l, params)
            ls += l.item() / n
            flat = torch.cat([gi.reshape(-1) for gi in g])
            gsum = flat / n if gsum is None else gsum + flat / n
        gd = gsum.double()
        finv_g = (gd - G.T @ torch.linalg.solve(K, G @ gd)) / eta
        q = (gd @ finv_g).item()
        assert math.isfinite(ls - l0) and math.isfinite(q)
    per = [timed(lambda: candidate(op))[1] for op in (1, 2, 3)]
    print(f"DARTS-IF woodbury N={n:<3}   build {t_build:8.3f} s   L(w) over N batches {t_l0:.3f} s")
    print(f"DARTS-IF per candidate    {statistics.median(per):8.3f} s   (median of 3: loss and g over N batches, g^T F^-1 g)")


def kfac_part(net, params, w, batches, n, reps):
    """Part 4: the same math as src/influence/kfac.rs, in PyTorch eager."""
    layers = [m for m in net.modules()
              if isinstance(m, (nn.Conv2d, nn.Linear)) or (isinstance(m, nn.BatchNorm2d) and m.affine)]
    seen = {}
    for m in layers:
        m.register_forward_hook(lambda mod, i, o: seen.__setitem__(mod, (i[0].detach(), o)))
    damping = 1e-3
    dd = torch.float64

    def record(b):
        seen.clear()
        x, y = batches[b]
        loss = F.cross_entropy(net(x, w), y, reduction="sum")  # per-sample signals
        mods = list(seen.keys())
        gs = torch.autograd.grad(loss, [seen[m][1] for m in mods])
        return [(m, seen[m][0], g.detach()) for m, g in zip(mods, gs)]

    def patches(m, x):
        if isinstance(m, nn.Conv2d):
            a = F.unfold(x, m.kernel_size, m.dilation, m.padding, m.stride)
            return a.view(x.shape[0], m.groups, -1, a.shape[-1])
        return torch.cat([x, torch.ones(x.shape[0], 1)], 1).view(x.shape[0], 1, -1, 1)

    def signals(m, g):
        if isinstance(m, nn.Conv2d):
            return g.reshape(g.shape[0], m.groups, g.shape[1] // m.groups, -1)
        return g.reshape(g.shape[0], 1, -1, 1)

    def xhat(m, x):
        mu, var = x.mean((0, 2, 3), keepdim=True), x.var((0, 2, 3), unbiased=False, keepdim=True)
        return (x - mu) / torch.sqrt(var + m.eps)

    def build(eigen_corrected):
        A, S, D, cnt, ns = {}, {}, {}, {}, 0
        for b in range(n):
            for m, x, g in record(b):
                if isinstance(m, nn.BatchNorm2d):
                    gw, gb = (g * xhat(m, x)).sum((2, 3)), g.sum((2, 3))
                    D[m] = D.get(m, 0) + torch.cat([gw, gb], 1).double().square().sum(0)
                    continue
                a, s = patches(m, x), signals(m, g)  # batch sums in float32, accumulated in float64
                cnt[m] = cnt.get(m, 0) + a.shape[0] * a.shape[3]
                A[m] = A.get(m, 0) + (a @ a.transpose(2, 3)).sum(0).double()
                S[m] = S.get(m, 0) + (s @ s.transpose(2, 3)).sum(0).double()
            ns += batches[b][0].shape[0]
        blocks = {}
        for m in A:
            la, qa = torch.linalg.eigh(A[m] / cnt[m])
            ls, qs = torch.linalg.eigh(S[m] / ns)
            blocks[m] = [qa, qs, ls.clamp_min(0).unsqueeze(2) * la.clamp_min(0).unsqueeze(1)]
        if eigen_corrected:
            lam = {m: 0 for m in A}
            for b in range(n):
                for m, x, g in record(b):
                    if m in A:
                        gs = signals(m, g) @ patches(m, x).transpose(2, 3)
                        qa, qs, _ = blocks[m]
                        lam[m] = lam[m] + (qs.transpose(1, 2).float() @ gs @ qa.float()).square().sum(0).double()
            for m in A:
                blocks[m][2] = lam[m] / ns
        return blocks, {m: d / ns for m, d in D.items()}

    def solve(blocks, diag, v):
        out = {}
        for m, (qa, qs, lam) in blocks.items():
            if isinstance(m, nn.Linear):
                V = torch.cat([v[m.weight], v[m.bias].unsqueeze(1)], 1).unsqueeze(0).double()
            else:
                V = v[m.weight].reshape(m.groups, m.out_channels // m.groups, -1).double()
            X = qs @ ((qs.transpose(1, 2) @ V @ qa) / (lam + damping)) @ qa.transpose(1, 2)
            if isinstance(m, nn.Linear):
                out[m.weight], out[m.bias] = X[0, :, :-1].float(), X[0, :, -1].float()
            else:
                out[m.weight] = X.reshape(m.weight.shape).float()
        for m, d in diag.items():
            x = torch.cat([v[m.weight], v[m.bias]]).double() / (d + damping)
            c = m.weight.numel()
            out[m.weight], out[m.bias] = x[:c].float(), x[c:].float()
        return [out.get(p, v[p] / damping) for p in params]

    v = {p: torch.randn_like(p) for p in params}
    eta = damping

    def woodbury_build():
        G = torch.stack([torch.cat([g.reshape(-1) for g in torch.autograd.grad(
            F.cross_entropy(net(batches[b][0], w), batches[b][1]), params)]) for b in range(n)]).double()
        return G, G @ G.T + n * eta * torch.eye(n, dtype=dd)

    def woodbury_solve(G, K):
        u = torch.cat([v[p].reshape(-1) for p in params]).double()
        y = torch.linalg.solve(K, G @ u)
        return ((u - G.T @ y) / eta).float()

    (G, K), tb = timed(woodbury_build)
    woodbury_solve(G, K)
    ts = statistics.median([timed(lambda: woodbury_solve(G, K))[1] for _ in range(reps)])
    print(f"woodbury  N={n:<3} build {tb:7.3f} s   IHVP {ts:7.4f} s")
    for name, ek in [("kfac", False), ("ekfac", True)]:
        (blocks, diag), tb = timed(lambda: build(ek))
        solve(blocks, diag, v)
        ts = statistics.median([timed(lambda: solve(blocks, diag, v))[1] for _ in range(reps)])
        mb = sum(q.numel() + r.numel() + l.numel() for q, r, l in blocks.values()) * 8 / 1e6
        print(f"{name:<9} N={n:<3} build {tb:7.3f} s   IHVP {ts:7.4f} s   factors {mb:.0f} MB")


if __name__ == "__main__":
    main()
