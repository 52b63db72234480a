# The PyTorch peer of bench/cpu.mjs: reads one JSON job per line on stdin, runs absorbed MLA decode as
# bmm -> softmax -> bmm on the CPU (or, for a job of kind "sdpa", prefill's multi-head attention through
# scaled_dot_product_attention), writes the output to a file for the check and answers with the timings.
import json, sys, time
import torch

# Importing torch takes seconds of CPU: bench/cpu.mjs waits for this line so no row is timed meanwhile.
print(json.dumps({"ready": True}), flush=True)

def timed(run, job):
    # Runs once (the output, for the check), warms up, times the repetitions; answers with the timings.
    with torch.no_grad():
        out = run()
        for _ in range(job["warmup"]):
            run()
        times = []
        for _ in range(job["reps"]):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
    out.float().contiguous().numpy().tofile(job["out"])
    print(json.dumps({"times": times, "version": torch.__version__}), flush=True)


def sdpa(job):
    # Prefill's peer: scaled_dot_product_attention over [H, N, D] queries and keys, [H, N, Dv] values.
    H, N, D, Dv = job["heads"], job["tokens"], job["width"], job["vWidth"]
    dt = torch.bfloat16 if job["dtype"] == "bf16" else torch.float32
    raw = torch.int16 if dt == torch.bfloat16 else torch.float32
    load = lambda f, *shape: torch.from_file(job[f], size=H * N * shape[-1], dtype=raw).view(dt).reshape(*shape)
    q, k, v = load("q", H, N, D), load("k", H, N, D), load("v", H, N, Dv)
    if hasattr(torch.nn.functional, "scaled_dot_product_attention"):
        return lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=job["causal"], scale=job["scale"])
    # PyTorch before 2.0 (Debian 12's 1.13) has no SDPA: the same attention written out, softmax in f32.
    mask = torch.full((N, N), float("-inf")).triu(1) if job["causal"] else None

    def written_out():
        s = torch.matmul(q, k.transpose(1, 2)).float() * job["scale"]
        if mask is not None:
            s = s + mask
        return torch.matmul(torch.softmax(s, dim=-1).to(dt), v)
    return written_out


for line in sys.stdin:
    job = json.loads(line)
    torch.set_num_threads(job["threads"])
    if job.get("kind") == "sdpa":
        timed(sdpa(job), job)
        continue
    B, M, N, D, V = job["batch"], job["rows"], job["context"], job["width"], job["kvLoraRank"]
    dt = torch.bfloat16 if job["dtype"] == "bf16" else torch.float32
    raw = torch.int16 if dt == torch.bfloat16 else torch.float32
    q = torch.from_file(job["q"], size=B * M * D, dtype=raw).view(dt).reshape(B, M, D)
    k = torch.from_file(job["k"], size=B * N * D, dtype=raw).view(dt).reshape(B, N, D)
    mask = None
    if job["causal"]:
        ql = job["queryLen"]
        t = torch.arange(M).div(M // ql, rounding_mode="floor")  # row m = t * heads + h
        limit = N - ql + 1 + t
        mask = torch.where(torch.arange(N)[None, :] < limit[:, None], 0.0, float("-inf")).to(torch.float32)

    def run():
        s = torch.bmm(q, k.transpose(1, 2)).float() * job["scale"]
        if mask is not None:
            s = s + mask
        p = torch.softmax(s, dim=-1).to(dt)
        return torch.bmm(p, k[:, :, :V])

    timed(run, job)
