#!/usr/bin/env python3
"""Communication cost model for Chorus's parallel layouts (docs/PARALLELISM.md).

Bytes each rank sends per optimizer step, and the time a ring collective takes
(alpha-beta model: T = steps * alpha + bytes_sent / bandwidth), for DP, ZeRO-1
and Megatron tensor parallelism, evaluated for the GPT-2 configs in configs/.

  python3 bench/comm_model.py            # markdown tables
Assumptions are the constants below; change them and rerun.
"""
import math

CONFIGS = {  # name: (n_layer, d, n_head, vocab, context, global batch tokens)
    "gpt2-124M": (12, 768, 12, 50257, 1024, 2**19),
    "gpt2-350M": (24, 1024, 16, 50257, 1024, 2**19),
    "gpt2-1.5B": (48, 1600, 25, 50257, 1024, 2**20),
}
GPUS = [8, 64, 1024]
IB_BYTES_S = 400e9 / 8          # 400 Gb/s InfiniBand per GPU (one NIC per GPU)
NVLINK_BYTES_S = 450e9          # H100 SXM NVLink, per direction
ALPHA_IB = 5e-6                 # per ring step latency across nodes (s)
ALPHA_NVL = 2e-6
PEAK_FLOPS = 989e12             # H100 dense bf16
MFU = 0.40                      # assumed compute efficiency
GRAD_BYTES = 4                  # fp32 gradients all-reduced (bf16 halves the DP terms)
ACT_BYTES = 2                   # bf16 activations in TP all-reduces
MICRO_BATCH = 8                 # sequences per micro-batch per rank (TP activation size)


def padded(v, m=64):
    return (v + m - 1) // m * m


def n_params(L, d, V, ctx):
    return L * (12 * d * d + 13 * d) + padded(V) * d + ctx * d + 2 * d


def ring_allreduce(bytes_, p, bw, alpha):
    """Bytes sent per rank and time of a ring all-reduce over p ranks."""
    if p == 1:
        return 0.0, 0.0
    sent = 2 * (p - 1) / p * bytes_
    return sent, 2 * (p - 1) * alpha + sent / bw


def ring_half(bytes_, p, bw, alpha):
    """Reduce-scatter or all-gather: half an all-reduce."""
    if p == 1:
        return 0.0, 0.0
    sent = (p - 1) / p * bytes_
    return sent, (p - 1) * alpha + sent / bw


def layout(gpus):
    """TP inside a node (8 GPUs share NVLink), DP across: the usual choice."""
    tp = 1 if gpus == 8 else 8  # small jobs run pure DP; larger ones TP 8 to fit memory/batch
    return tp, gpus // tp


def rows():
    out = []
    for name, (L, d, H, V, ctx, batch_tokens) in CONFIGS.items():
        N = n_params(L, d, V, ctx)
        for g in GPUS:
            for mode in ("DP", "ZeRO-1", "TP8xDP"):
                tp, dp = (1, g) if mode != "TP8xDP" else (8, g // 8)
                # every DP replica needs at least one micro-batch per step: the
                # global batch grows with DP beyond the config's (weak scaling)
                tokens = max(batch_tokens, dp * MICRO_BATCH * ctx)
                flops = 6 * (N - ctx * d) * tokens + 12 * L * d * ctx * tokens
                # gradients cross InfiniBand once the DP group spans nodes (8 GPUs per node)
                bw, alpha = (NVLINK_BYTES_S, ALPHA_NVL) if g <= 8 else (IB_BYTES_S, ALPHA_IB)
                grad_bytes = GRAD_BYTES * N / tp
                if mode == "ZeRO-1":
                    s1, t1 = ring_half(grad_bytes, dp, bw, alpha)      # reduce-scatter gradients
                    s2, t2 = ring_half(grad_bytes, dp, bw, alpha)      # all-gather parameters
                    dp_sent, dp_overlap, dp_serial = s1 + s2, t1, t2   # the all-gather follows the update
                else:
                    dp_sent, dp_overlap = ring_allreduce(grad_bytes, dp, bw, alpha)
                    dp_serial = 0.0
                tp_sent = tp_time = 0.0
                if tp > 1:  # TP stays inside a node, on NVLink
                    micro = tokens // ctx // dp // MICRO_BATCH
                    act = ACT_BYTES * MICRO_BATCH * ctx * d
                    n_ar = 4 * L + 2  # 2 fwd + 2 bwd per layer, embedding fwd, LM-head input grad bwd
                    s, t = ring_allreduce(act, tp, NVLINK_BYTES_S, ALPHA_NVL)
                    tp_sent, tp_time = n_ar * micro * s, n_ar * micro * t
                compute = flops / (g * PEAK_FLOPS * MFU)
                comm = dp_overlap + dp_serial + tp_time
                eff_serial = compute / (compute + comm)
                eff_overlap = compute / (max(compute, dp_overlap) + dp_serial + tp_time)
                out.append((name, N, g, mode, tp, dp, tokens, dp_sent, tp_sent, compute, comm, eff_serial,
                            eff_overlap))
    return out


def main():
    print("| model | N | GPUs | layout | tokens/step | DP bytes sent/rank | TP bytes sent/rank | compute s | comm s |"
          " efficiency, no overlap | efficiency, DP overlapped |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, N, g, mode, tp, dp, tokens, dps, tps, comp, comm, e1, e2 in rows():
        print(f"| {name} | {N/1e6:.0f}M | {g} | {mode} (tp {tp}, dp {dp}) | {tokens/2**20:.2f}M | {dps/1e9:.2f} GB |"
              f" {tps/1e9:.2f} GB | {comp:.3f} | {comm:.3f} | {100*e1:.0f}% | {100*e2:.0f}% |")


if __name__ == "__main__":
    main()
